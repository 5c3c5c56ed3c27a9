// The aigi page: pick or drop images, score each with POST v1/detect, show the results.
// Plain JavaScript, no build step and no outside requests (the page's CSP allows none).
"use strict";

(() => {
  const CSV_FIELDS = ["path", "p_fake", "verdict", "generator", "p_generator", "error"];  // as aigi detect --out
  const CONCURRENT_UPLOADS = 4;  // one file per request: the server batches concurrent requests together
  const state = { rows: [], threshold: null, auth: false, maxMb: null, queue: [], active: 0, total: 0, done: 0 };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  const fmt = (p, digits = 3) => (p == null ? "n/a" : Number(p).toFixed(digits));

  // p_fake 0 -> blue, 0.5 -> yellow, 1 -> red; the same scale for the bar, the boxes and the legend.
  function colour(p, alpha = 1) {
    const hue = 220 * (1 - Math.min(1, Math.max(0, p)));
    return `hsla(${hue.toFixed(0)}, 85%, 50%, ${alpha})`;
  }

  function verdictText(r) {
    if (r.error) return "Could not score";
    if (r.verdict === "ai-generated") return "AI-generated";
    if (r.verdict === "real") return "Camera photo";
    if (r.verdict === "uncertain") return "Uncertain";
    return r.verdict || "?";
  }

  function pFakeBar(p, threshold) {
    const bar = el("div", {
      class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(p),
      "aria-label": "probability that the image is AI-generated", "aria-valuetext": `p_fake ${fmt(p)}`,
    });
    const fill = el("span", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.style.background = colour(p);
    bar.append(fill);
    if (threshold != null) {
      const mark = el("span", { class: "threshold", title: `threshold ${fmt(threshold)}` });
      mark.style.left = `${(100 * threshold).toFixed(1)}%`;
      bar.append(mark);
    }
    return bar;
  }

  // What the file's metadata says, as a person reads it: one row per finding, nested findings
  // (C2PA, generator parameters, EXIF) as lists of "name: value", never raw JSON.
  const EVIDENCE_LABELS = {
    format: "Format", c2pa: "C2PA manifest", digital_source_types: "XMP source type",
    generator: "Generator parameters", exif: "Camera EXIF", texts: "Text in the file", problems: "Problems",
    reason: "Summary",
  };
  const isEmpty = (v) => v == null || v === "" || (typeof v === "object" && !Object.keys(v).length);
  const label = (k) => EVIDENCE_LABELS[k] || String(k).replace(/_/g, " ");

  function evidenceValue(v) {
    if (typeof v === "boolean") return document.createTextNode(v ? "yes" : "no");
    if (typeof v !== "object") return document.createTextNode(String(v));
    if (Array.isArray(v)) {
      const items = v.filter((x) => !isEmpty(x));
      if (items.every((x) => typeof x !== "object")) return document.createTextNode(items.join(", "));
      return el("ul", { class: "ev-list" }, ...items.map((x) => el("li", {}, evidenceValue(x))));
    }
    // "name: value" lines that wrap between words: a grid of two columns would squeeze one of
    // them in a narrow card.
    const fields = el("div", { class: "ev-fields" });
    for (const [k, x] of Object.entries(v)) {
      if (isEmpty(x)) continue;
      fields.append(el("div", { class: "ev-field" }, el("span", { class: "ev-key", text: `${label(k)}: ` }), evidenceValue(x)));
    }
    return fields;
  }

  function evidenceTable(evidence) {
    const table = el("table", { class: "evidence" });
    table.append(el("caption", { text: "Evidence from metadata" }));
    const body = el("tbody");
    for (const [k, v] of Object.entries(evidence)) {
      // Empty findings (no C2PA, no texts, ...) and the file name say nothing: leave them out.
      if (k === "name" || k === "empty" || isEmpty(v)) continue;
      body.append(el("tr", {}, el("th", { scope: "row", text: label(k) }), el("td", {}, evidenceValue(v))));
    }
    table.append(body);
    return table;
  }

  function legend() {
    const box = el("div", { class: "legend", "aria-hidden": "true" });
    const ramp = el("span", { class: "ramp" });
    ramp.style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((p) => colour(p)).join(", ")})`;
    box.append(el("span", { text: "real 0" }), ramp, el("span", { text: "1 AI-generated" }));
    return box;
  }

  // Crop boxes are in the image's pixel coordinates ([x0, y0, x1, y1] of image_size); the
  // canvas lies over the <img> as displayed, so every box is scaled by displayed / decoded size.
  function drawHeatmap(img, canvas, crops, imageSize) {
    const w = img.clientWidth, h = img.clientHeight;
    if (!w || !h) return;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
    const [iw, ih] = imageSize || [img.naturalWidth, img.naturalHeight];
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio * w / iw, 0, 0, ratio * h / ih, 0, 0);
    ctx.clearRect(0, 0, iw, ih);
    for (const c of crops) {
      const [x0, y0, x1, y1] = c.box;
      ctx.fillStyle = colour(c.p_fake, 0.35);
      ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
      ctx.strokeStyle = colour(c.p_fake, 0.9);
      ctx.lineWidth = Math.max(1, iw / w);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    canvas.dataset.boxes = String(crops.length);
  }

  // Fills a card from one result of the API (or a request-level error); used by tests too.
  function renderResult(card, r, threshold) {
    card.dataset.state = r.error ? "error" : "done";
    card.dataset.verdict = r.error ? "error" : (r.verdict || "");
    card.dataset.pFake = r.p_fake == null ? "" : String(r.p_fake);
    const info = card.querySelector(".info");
    info.replaceChildren();
    const verdict = el("p", { class: `verdict ${r.error ? "error" : r.verdict}` });
    verdict.append(el("strong", { text: verdictText(r) }));
    if (r.verdict === "uncertain") verdict.append(" (the model abstains: p_fake is too close to call)");
    info.append(verdict);
    if (r.error) {
      info.append(el("p", { class: "error-text", role: "alert", text: r.error }));
      return;
    }
    info.append(pFakeBar(r.p_fake, threshold));
    const facts = el("dl", { class: "facts" });
    const fact = (k, v) => facts.append(el("dt", { text: k }), el("dd", { text: v }));
    fact("p_fake", `${fmt(r.p_fake, 4)}${threshold != null ? ` (threshold ${fmt(threshold)})` : ""}`);
    if (r.pixel_verdict && r.pixel_verdict !== r.verdict) fact("pixels alone", r.pixel_verdict);
    if (r.reason) fact("why", r.reason);
    if (r.generator) fact("generator", `${r.generator === "unknown" ? "unknown (matches no trained generator)" : r.generator} (p ${fmt(r.p_generator)})`);
    if (r.image_size) fact("size", `${r.image_size[0]} × ${r.image_size[1]} px${r.too_small ? " (smaller than the model's input)" : ""}`);
    else if (r.too_small) fact("size", "smaller than the model's input");
    info.append(facts);
    if (r.evidence && Object.keys(r.evidence).length) info.append(evidenceTable(r.evidence));
    if (Array.isArray(r.crops) && r.crops.length) {
      const img = card.querySelector("img"), canvas = card.querySelector("canvas");
      const draw = () => drawHeatmap(img, canvas, r.crops, r.image_size);
      if (img.complete && img.naturalWidth) draw(); else img.addEventListener("load", draw, { once: true });
      window.addEventListener("resize", draw);
      const cap = el("p", { class: "hint", text: `Heatmap: ${r.crops.length} regions scored, coloured by p_fake.` });
      info.append(legend(), cap);
    }
  }

  function newCard(name, url) {
    const card = el("li", { class: "card", "data-state": "pending" });
    card.dataset.name = name;
    card.append(el("h3", { text: name }));
    const figure = el("div", { class: "figure" });
    const img = el("img", { alt: `uploaded image ${name}` });
    img.addEventListener("error", () => figure.classList.add("broken"), { once: true });
    if (url) img.src = url;
    figure.append(img, el("canvas", { class: "heat", "aria-hidden": "true" }));
    card.append(figure, el("div", { class: "info" }, el("p", { class: "verdict pending", text: "Scoring…" })));
    $("results").append(card);
    $("empty").hidden = true;
    return card;
  }

  function csvCell(v) {
    const s = v == null ? "" : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  function toCsv(rows) {
    return [CSV_FIELDS.join(","), ...rows.map((r) => CSV_FIELDS.map((k) => csvCell(r[k])).join(","))].join("\n") + "\n";
  }

  function updateSummary() {
    const rows = state.rows.filter(Boolean);
    const scored = rows.filter((r) => !r.error);
    const count = (v) => scored.filter((r) => r.verdict === v).length;
    const pending = state.total - state.done;
    let text = `${state.done} of ${state.total} image(s) done: ${scored.length} scored ` +
      `(${count("ai-generated")} AI-generated, ${count("real")} real`;
    if (count("uncertain")) text += `, ${count("uncertain")} uncertain`;
    text += `), ${rows.length - scored.length} could not be scored.`;
    if (pending) text += ` Scoring ${pending} more…`;
    $("status").textContent = text;
    const link = $("csv");
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([toCsv(rows)], { type: "text/csv" }));
    link.hidden = rows.length === 0;
    $("clear").hidden = state.total === 0;
  }

  function headers() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function upload(job) {
    const { file, card, index } = job;
    let row;
    try {
      const form = new FormData();
      form.append("files", file, file.name);
      const resp = await fetch("v1/detect", { method: "POST", body: form, headers: headers() });
      let body = null;
      try { body = await resp.json(); } catch (e) { body = null; }
      if (resp.ok && body && body.results && body.results.length) {
        state.threshold = body.threshold;
        row = { ...body.results[0], path: file.name };
      } else {
        const err = body && body.error ? `${body.error.message} (HTTP ${resp.status} ${body.error.code})` : `HTTP ${resp.status}`;
        row = { path: file.name, error: err };
      }
    } catch (e) {
      row = { path: file.name, error: `the server could not be reached (${e.message})` };
    }
    if (!card.isConnected) return;  // cleared meanwhile
    state.rows[index] = row;
    renderResult(card, row, state.threshold);
    state.done += 1;
    updateSummary();
  }

  function pump() {
    while (state.active < CONCURRENT_UPLOADS && state.queue.length) {
      const job = state.queue.shift();
      state.active += 1;
      upload(job).finally(() => { state.active -= 1; pump(); });
    }
  }

  function addFiles(files) {
    for (const file of files) {
      const index = state.total++;
      const url = file.type.startsWith("image/") || !file.type ? URL.createObjectURL(file) : null;
      state.queue.push({ file, index, card: newCard(file.name, url) });
    }
    updateSummary();
    pump();
  }

  function clearAll() {
    for (const img of $("results").querySelectorAll("img")) if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    $("results").replaceChildren();
    Object.assign(state, { rows: [], queue: [], total: 0, done: 0 });
    $("empty").hidden = false;
    $("status").textContent = "";
    updateSummary();
    $("files").focus();
  }

  async function loadHealth() {
    try {
      const h = await (await fetch("v1/health")).json();
      state.threshold = h.threshold;
      state.auth = h.auth;
      $("key-row").hidden = !h.auth;
      $("limits").textContent = `Model ${h.model} (${h.input_px} px input). Up to ${h.max_mb} MB and ` +
        `${Number(h.max_pixels).toLocaleString("en")} pixels per image.`;
    } catch (e) {
      $("limits").textContent = "The server's health could not be read.";
    }
  }

  function init() {
    $("files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
    $("clear").addEventListener("click", clearAll);
    const drop = $("drop");
    for (const type of ["dragenter", "dragover"]) {
      document.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    for (const type of ["dragleave", "drop"]) {
      document.addEventListener(type, (e) => { e.preventDefault(); if (type === "drop" || e.target === drop) drop.classList.remove("over"); });
    }
    document.addEventListener("drop", (e) => { if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files); });
    loadHealth();
  }

  window.aigi = { renderResult, newCard, toCsv, state };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
