"""Tests for aigi.forensics.evidence: provenance read from the file itself, and the combination rule.

Every file is built here: PNG text chunks as AUTOMATIC1111, ComfyUI, NovelAI and InvokeAI
write them, XMP packets with an IPTC digital source type, iPhone-like EXIF, and JPEG/PNG
files signed with a C2PA manifest by a certificate chain made in the test.
"""

from __future__ import annotations

import datetime
import io
import json
import zlib

import pytest
from PIL import Image, PngImagePlugin

from aigi.forensics.containers import scan_metadata
from aigi.forensics.evidence import Evidence, read_evidence
from aigi.forensics.generators import xmp_source_types
from aigi.forensics.verdict import combine
from aigi.io import decode as aigi_decode

A1111 = ("a lighthouse at dusk, oil painting\nNegative prompt: blurry, lowres\n"
         "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567, Size: 512x768, "
         "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.6.0")
COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "sampler_name": "euler", "model": ["4", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
}
COMFY_WORKFLOW = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}, {"id": 4, "type": "CheckpointLoaderSimple"}],
                  "links": [[1, 4, 0, 3, 0, "MODEL"]]}
AI_URI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def xmp_packet(source_type: str = AI_URI) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'Iptc4xmpExt:DigitalSourceType="{source_type}"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def png_with(texts: dict[str, str], compressed: tuple[str, ...] = ()) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in texts.items():
        info.add_text(k, v, zip=k in compressed)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 200)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def jpeg(**save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 100, 40)).save(buf, "JPEG", quality=90, **save_kwargs)
    return buf.getvalue()


def iphone_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131], exif[0x0132] = "Apple", "iPhone 13", "16.1.1", "2023:05:01 10:00:00"
    exif.get_ifd(0x8769)[0x9003] = "2023:05:01 09:59:58"
    return exif


# ----------------------------------------------------------------------------- generators


def test_a1111_parameters_in_png():
    ev = read_evidence(png_with({"parameters": A1111}), "a1111.png")
    assert ev.format == "PNG" and not ev.problems and ev.reason is None
    g = ev.generator
    assert g["tool"] == "AUTOMATIC1111" and g["keys"] == ["parameters"] and g["where"] == "PNG tEXt"
    assert g["fields"]["Steps"] == "28" and g["fields"]["Sampler"] == "DPM++ 2M Karras"
    assert g["fields"]["Model hash"] == "6ce0161689" and g["fields"]["Seed"] == "1234567"
    assert g["excerpt"].startswith("a lighthouse at dusk") and len(g["excerpt"]) <= 300


def test_long_parameters_are_cut_to_a_bounded_excerpt():
    long = "masterpiece, " * 2000 + "\nSteps: 20, Sampler: Euler a, Seed: 1"
    ev = read_evidence(png_with({"parameters": long}, compressed=("parameters",)))
    assert ev.generator["tool"] == "AUTOMATIC1111" and ev.generator["where"] == "PNG zTXt"
    assert len(ev.generator["excerpt"]) <= 300 and all(len(t["excerpt"]) <= 300 for t in ev.texts)


def test_comfyui_prompt_and_workflow():
    ev = read_evidence(png_with({"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps(COMFY_WORKFLOW)}))
    g = ev.generator
    assert g["tool"] == "ComfyUI" and g["keys"] == ["prompt", "workflow"]
    assert g["fields"] == {"nodes": 3, "seed": 42, "steps": 20, "sampler": "euler", "checkpoint": "sd_xl_base_1.0.safetensors"}


def test_comfyui_workflow_alone_and_a_prompt_that_is_just_text():
    assert read_evidence(png_with({"workflow": json.dumps(COMFY_WORKFLOW)})).generator["fields"] == {"nodes": 2}
    # A plain "prompt" text (no node graph) is not ComfyUI and names no tool.
    assert read_evidence(png_with({"prompt": "a cat on a sofa"})).generator is None


def test_novelai():
    comment = {"prompt": "1girl, scenery", "steps": 28, "sampler": "k_euler_ancestral", "seed": 99, "scale": 5.0,
               "width": 832, "height": 1216}
    ev = read_evidence(png_with({"Title": "AI generated image", "Description": "1girl, scenery", "Software": "NovelAI",
                                 "Source": "Stable Diffusion XL C1E1DE52", "Comment": json.dumps(comment)}))
    g = ev.generator
    assert g["tool"] == "NovelAI" and "Software" in g["keys"] and "Comment" in g["keys"]
    assert g["fields"] == {"steps": 28, "sampler": "k_euler_ancestral", "seed": 99, "scale": 5.0, "width": 832, "height": 1216}


def test_invokeai_metadata_and_legacy_keys():
    meta = {"generation_mode": "txt2img", "steps": 30, "scheduler": "euler", "seed": 7, "cfg_scale": 7.5,
            "model": {"name": "stable-diffusion-v1-5", "base": "sd-1"}, "app_version": "3.4.0"}
    g = read_evidence(png_with({"invokeai_metadata": json.dumps(meta)})).generator
    assert g["tool"] == "InvokeAI" and g["keys"] == ["invokeai_metadata"]
    assert g["fields"]["model_name"] == "stable-diffusion-v1-5" and g["fields"]["steps"] == 30
    legacy = {"model": "stable diffusion", "model_weights": "stable-diffusion-1.5", "app_id": "invoke-ai/InvokeAI",
              "app_version": "2.3.0", "image": {"prompt": "a cat", "steps": 50, "sampler": "k_lms", "seed": 42}}
    g = read_evidence(png_with({"sd-metadata": json.dumps(legacy), "Dream": '"a cat" -s 50 -S 42 -W 512 -H 512 -A k_lms'})).generator
    assert g["tool"] == "InvokeAI" and g["keys"] == ["sd-metadata", "Dream"]
    assert g["fields"]["steps"] == 50 and g["fields"]["model_weights"] == "stable-diffusion-1.5"


def test_a1111_in_jpeg_exif_user_comment():
    """A1111 writes JPEG/WebP parameters as an EXIF UserComment, UTF-16 after 'UNICODE\\0'."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + A1111.encode("utf-16-be")
    ev = read_evidence(jpeg(exif=exif.tobytes()), "a1111.jpg")
    assert ev.generator["tool"] == "AUTOMATIC1111" and ev.generator["where"] == "EXIF UserComment"
    assert ev.generator["fields"]["Steps"] == "28"
    assert ev.exif == {}  # no camera fields


def test_a1111_in_jpeg_comment_and_comfyui_in_webp_exif():
    ev = read_evidence(jpeg(comment=A1111.encode()), "c.jpg")
    assert ev.generator["tool"] == "AUTOMATIC1111" and ev.generator["where"] == "JPEG comment"
    exif = Image.Exif()
    exif[0x010F] = "workflow:" + json.dumps(COMFY_WORKFLOW)
    exif[0x0110] = "prompt:" + json.dumps(COMFY_PROMPT)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "WEBP", exif=exif.tobytes())
    ev = read_evidence(buf.getvalue(), "comfy.webp")
    assert ev.generator["tool"] == "ComfyUI" and ev.generator["fields"]["nodes"] == 3
    assert "Make" not in ev.exif and "Model" not in ev.exif  # a graph, not a camera


# ----------------------------------------------------------------------------- XMP and EXIF


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_xmp_digital_source_type(fmt):
    buf = io.BytesIO()
    im = Image.new("RGB", (16, 16), (1, 2, 3))
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp_packet().decode())
        im.save(buf, "PNG", pnginfo=info)
    else:
        if fmt == "HEIF" and not aigi_decode.register_heif_opener():
            pytest.skip("pillow-heif is not installed")
        im.save(buf, fmt, xmp=xmp_packet())
    ev = read_evidence(buf.getvalue(), f"x.{fmt.lower()}")
    assert ev.digital_source_types == [{"type": "trainedAlgorithmicMedia", "where": "XMP"}], ev.to_dict()


def test_xmp_source_type_forms():
    assert xmp_source_types(xmp_packet().decode()) == ["trainedAlgorithmicMedia"]
    element = "<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture</Iptc4xmpExt:DigitalSourceType>"
    assert xmp_source_types(element) == ["digitalCapture"]
    assert xmp_source_types('Iptc4xmpExt:DigitalSourceType="compositeWithTrainedAlgorithmicMedia"') == ["compositeWithTrainedAlgorithmicMedia"]


def test_iphone_exif():
    ev = read_evidence(jpeg(exif=iphone_exif()), "IMG_0001.jpg")
    assert ev.exif == {"Make": "Apple", "Model": "iPhone 13", "Software": "16.1.1", "DateTime": "2023:05:01 10:00:00",
                       "DateTimeOriginal": "2023:05:01 09:59:58"}
    assert ev.generator is None and ev.c2pa is None and not ev.digital_source_types
    assert not ev.empty and ev.reason is None
    assert scan_metadata(jpeg(exif=iphone_exif())).exif


# ----------------------------------------------------------------------------- broken input


def test_non_image_and_empty_bytes():
    for raw, why in ((b"<html>not an image</html>", "not an image"), (b"", "empty file")):
        ev = read_evidence(raw, "notes.jpg")
        assert ev.empty and why in ev.reason and ev.format is None
        json.dumps(ev.to_dict())


def test_truncated_png_gives_an_empty_result_with_a_reason():
    raw = png_with({"parameters": A1111})
    cut = raw[: raw.index(b"tEXt") + 20]  # ends inside the text chunk
    ev = read_evidence(cut, "cut.png")
    assert ev.empty and ev.generator is None
    assert "truncated" in ev.reason and "tEXt" in ev.reason


def test_truncated_and_garbled_jpeg_do_not_raise():
    raw = jpeg(exif=iphone_exif())
    ev = read_evidence(raw[:30], "cut.jpg")
    assert ev.empty and "truncated" in ev.reason
    garbled = raw[:2] + b"\x00" * 200
    ev = read_evidence(garbled, "garbled.jpg")
    assert ev.empty and ev.reason


def test_damaged_chunk_is_reported_and_still_read():
    raw = bytearray(png_with({"parameters": A1111}))
    crc_at = raw.index(b"tEXt") + 4 + len(b"parameters\x00" + A1111.encode("latin-1"))
    raw[crc_at] ^= 0xFF
    ev = read_evidence(bytes(raw), "crc.png")
    assert ev.generator["tool"] == "AUTOMATIC1111"
    assert any("CRC" in p for p in ev.problems)


def test_compressed_text_bomb_is_refused_not_inflated():
    body = b"parameters\x00\x00" + zlib.compress(b"\x00" * (20 * 2**20), 9)
    chunk = len(body).to_bytes(4, "big") + b"zTXt" + body + zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    raw = png_with({})
    raw = raw[:33] + chunk + raw[33:]  # after IHDR
    ev = read_evidence(raw, "bomb.png")
    assert any("inflates to more than" in p for p in ev.problems)
    assert ev.generator is None


def test_read_evidence_never_raises_on_random_cuts():
    raw = png_with({"parameters": A1111, "prompt": json.dumps(COMFY_PROMPT)})
    for n in range(0, len(raw), 7):
        assert isinstance(read_evidence(raw[:n]), Evidence)
    raw = jpeg(exif=iphone_exif(), comment=b"hello")
    for n in range(0, len(raw), 11):
        assert isinstance(read_evidence(raw[:n]), Evidence)


# ----------------------------------------------------------------------------- C2PA


def make_test_chain():
    """A CA and an ES256 leaf with what C2PA asks of a claim signer: digitalSignature key
    usage, an allowed extended key usage (emailProtection), not a CA, key identifiers."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aigi tests")])

    def usage(**on) -> x509.KeyUsage:
        flags = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                 "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
        return x509.KeyUsage(**{f: on.get(f, False) for f in flags})

    def cert(subject, issuer, public_key, signing_key, ca: bool):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
             .add_extension(usage(key_cert_sign=True, crl_sign=True) if ca else usage(digital_signature=True), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        if not ca:
            b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False))
        return b.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert(name("aigi test CA"), name("aigi test CA"), ca_key.public_key(), ca_key, ca=True)
    leaf = cert(name("aigi test signer"), ca.subject, key.public_key(), ca_key, ca=False)
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return chain, private, ca.public_bytes(pem).decode()


@pytest.fixture(scope="module")
def signed():
    """{"JPEG": bytes, "PNG": bytes} signed with a c2pa.created / trainedAlgorithmicMedia manifest."""
    c2pa = pytest.importorskip("c2pa", reason="c2pa-python is not installed (pip install 'aigi[provenance]')")
    pytest.importorskip("cryptography", reason="the test certificate chain needs the cryptography package")
    chain, private, anchor = make_test_chain()
    manifest = {
        "claim_generator_info": [{"name": "aigi-test-generator", "version": "1.0"}],
        "title": "generated.jpg",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": AI_URI, "softwareAgent": {"name": "aigi-test-model"}}]}}],
    }
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None))
    out = {"anchor": anchor}
    for fmt, mime in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
        src = io.BytesIO()
        Image.new("RGB", (64, 48), (120, 30, 200)).save(src, fmt)
        src.seek(0)
        dst = io.BytesIO()
        with c2pa.Builder(manifest) as builder:
            builder.sign(signer, mime, src, dst)
        out[fmt] = dst.getvalue()
    return out


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_c2pa_manifest_is_read_back(signed, fmt):
    ev = read_evidence(signed[fmt], f"signed.{fmt.lower()}")
    c = ev.c2pa
    assert c["validation_state"] == "Valid" and c["validates"] and not c["trusted"]  # our CA is on no trust list
    assert c["signer"] == "aigi test signer" and c["issuer"] == "aigi tests"
    assert c["claim_generator"].startswith("aigi-test-generator 1.0")
    assert c["actions"][0] == {"action": "c2pa.created", "digital_source_type": "trainedAlgorithmicMedia",
                               "software_agent": "aigi-test-model", "manifest": "active"}
    assert c["ai_declaration"]["action"] == "c2pa.created" and c["failures"] == []
    verdict, reason = combine("real", 0.08, ev)
    assert verdict == "ai-generated"
    assert "aigi test signer" in reason and "c2pa.created" in reason and "trainedAlgorithmicMedia" in reason
    assert "p_fake 0.080" in reason
    json.dumps(ev.to_dict())


def test_c2pa_trust_anchor_makes_it_trusted(signed):
    ev = read_evidence(signed["JPEG"], trust_anchors=signed["anchor"])
    assert ev.c2pa["validation_state"] == "Trusted" and ev.c2pa["trusted"]
    assert "(trusted)" in combine("real", 0.1, ev)[1]


def test_c2pa_manifest_of_a_changed_file_does_not_validate(signed):
    raw = bytearray(signed["JPEG"])
    raw[-20] ^= 0xFF  # a change in the image data after signing
    ev = read_evidence(bytes(raw), "edited.jpg")
    c = ev.c2pa
    assert c["validation_state"] == "Invalid" and not c["validates"]
    assert "assertion.dataHash.mismatch" in c["failures"]
    verdict, reason = combine("real", 0.2, ev)
    assert verdict == "ai-generated" and "does not validate" in reason and "dataHash.mismatch" in reason


def test_c2pa_manifest_cut_short_is_reported_not_raised(signed):
    raw = signed["PNG"]
    ev = read_evidence(raw[: raw.index(b"caBX") + 200], "cut.png")
    assert ev.c2pa and "error" in ev.c2pa and "cannot be read" in ev.c2pa["error"]
    assert any("truncated" in p for p in ev.problems)


# ----------------------------------------------------------------------------- combine


def test_combine_rules():
    gen = read_evidence(png_with({"parameters": A1111}))
    verdict, reason = combine("real", 0.03, gen)
    assert verdict == "ai-generated" and "AUTOMATIC1111" in reason and "rarely forged" in reason and "overridden" in reason
    assert combine("ai-generated", 0.97, gen.to_dict())[0] == "ai-generated"  # a dict from to_dict works too

    xmp = read_evidence(jpeg(xmp=xmp_packet()))
    verdict, reason = combine("real", 0.4, xmp)
    assert verdict == "ai-generated" and "trainedAlgorithmicMedia" in reason

    camera = read_evidence(jpeg(exif=iphone_exif()))
    for pixel in ("real", "ai-generated"):  # camera EXIF never changes the pixel verdict
        verdict, reason = combine(pixel, 0.9 if pixel == "ai-generated" else 0.1, camera)
        assert verdict == pixel and "Apple iPhone 13" in reason and "not used" in reason

    capture = read_evidence(jpeg(xmp=xmp_packet("http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture")))
    verdict, reason = combine("ai-generated", 0.88, capture)
    assert verdict == "ai-generated" and "digitalCapture" in reason

    assert combine("real", 0.2, read_evidence(jpeg())) == ("real", "pixel verdict stands: real (p_fake 0.200)")
    assert combine("error", None, None)[0] == "error"
    assert combine("", None, gen)[0] == "ai-generated"  # an unscored file can still carry evidence
