"""From model outputs to results: combining crop scores, verdicts, and ``predict``.

Shared by every runtime (the torch :class:`~aigi.detector.model.Detector` and
``aigi.inference.runtime.OnnxDetector``): a runtime only has to say how it turns a batch of crops into
logits (``crop_logits``); everything after that is here, so both give the same results.

How crops combine (native-crop models): the image's binary logit is the **mean of its
crops' logits**, and ``p_fake = sigmoid(mean_logit / temperature)``. The mean, not the
maximum, so that one odd patch (a flat sky, a logo) cannot decide alone; every crop's own
``p_fake`` is kept in ``Prediction.crops`` for the heatmap. The source head's logits are
averaged the same way before the softmax.

How a verdict is reached (:func:`decide`, the same for every runtime, file, upload and Ray row):

1. **Pixel verdict** from the calibrated ``p_fake`` and the model's operating point
   (:class:`OperatingPoint`): ``uncertain`` inside the model's uncertain band (``low <= p_fake
   <= high``, chosen on held-out data by :func:`aigi.detector.thresholds.uncertain_band`), else
   ``ai-generated`` at or above the threshold and ``real`` below. A model without a band never
   abstains (except on images too small to judge).
2. **Final verdict**: the pixel verdict combined with the file's metadata by
   :func:`aigi.forensics.verdict.combine` (a validating C2PA AI declaration or generator parameters make
   it ``ai-generated``; camera EXIF never changes it), with the reason. Without evidence (a PIL
   image, or evidence switched off) the pixel verdict is final.
3. **Generator**, for an ``ai-generated`` verdict: the one the file's own metadata names, when it
   names one (:func:`aigi.forensics.verdict.declared_generator`; ``p_generator`` is then empty);
   else the source head's top generator, and ``p_generator`` its probability given AI-generated;
   ``unknown`` when ``p_generator`` is under the model's open-set threshold
   (:func:`aigi.training.calibration.open_set_threshold`). Training aids (``aligned-*``) are never
   named: the top is taken among real generators only.

``p_fake`` is never changed by the band or the evidence.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ..forensics.evidence import load_with_evidence
from ..forensics.verdict import FAKE_VERDICT, REAL_VERDICT, combine, declared_generator
from ..io.inputs import ModelInput, Source, source_name
from ..io.samples import ImageDecodeError

UNCERTAIN_VERDICT = "uncertain"
UNKNOWN_GENERATOR = "unknown"
# Source labels that are training aids, not generators anyone meets (aigi synth aligned's round trips
# through an autoencoder): the head may learn them, but the generator column never names them.
TRAINING_AID_PREFIXES = ("aligned-",)


def is_training_aid(label: str) -> bool:
    return label.startswith(TRAINING_AID_PREFIXES)


@dataclass
class Prediction:
    """The result for one image. ``error`` is set (and scores are empty) when it could not be read.

    ``crops`` holds each scored crop as ``{"box": [left, top, right, bottom], "p_fake": p, "scale": s}``
    (``scale`` 1.0: native pixels; 0.5: the region seen at half size)
    in the pixels of the upright image (``image_size`` = [width, height]). ``too_small`` images
    (shorter side under the model's ``min_side``) get no score: verdict ``uncertain`` and a ``note``.
    """

    path: str
    p_fake: float | None = None
    verdict: str = ""  # final: the pixel verdict combined with the evidence
    generator: str = ""
    p_generator: float | None = None
    generator_probs: dict[str, float] = field(default_factory=dict)
    error: str = ""
    crops: list[dict] = field(default_factory=list)
    image_size: list[int] | None = None
    too_small: bool = False
    note: str = ""
    pixel_verdict: str = ""  # from p_fake alone (threshold and uncertain band)
    evidence: dict | None = None  # aigi.forensics.evidence.Evidence.to_dict() of the file; None when not read
    reason: str = ""  # why the final verdict (aigi.forensics.verdict.combine); empty without evidence

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OperatingPoint:
    """How scores become verdicts: the threshold, the uncertain band, the open-set threshold."""

    threshold: float
    band: tuple[float, float] | None = None  # p_fake in [low, high] -> uncertain
    open_set_threshold: float | None = None  # p_generator below this -> generator "unknown"

    @classmethod
    def from_config(cls, config: dict) -> "OperatingPoint":
        band = config.get("uncertain_band")
        open_set = config.get("open_set")
        return cls(float(config["threshold"]),
                   (float(band["low"]), float(band["high"])) if band else None,
                   float(open_set["threshold"]) if open_set else None)

    def pixel_verdict(self, p_fake: float) -> str:
        if self.band is not None and self.band[0] <= p_fake <= self.band[1]:
            return UNCERTAIN_VERDICT
        return FAKE_VERDICT if p_fake >= self.threshold else REAL_VERDICT


def decide(prediction: Prediction, labels: Sequence[str], point: OperatingPoint) -> Prediction:
    """Set the verdicts, reason and generator of a scored ``prediction`` (in place) by the rules of
    the module docstring; ``p_fake``, the probabilities and the evidence are left as they are."""
    if prediction.error:
        return prediction
    if prediction.p_fake is not None:
        prediction.pixel_verdict = point.pixel_verdict(prediction.p_fake)
    else:
        prediction.pixel_verdict = UNCERTAIN_VERDICT  # too small to judge
    if prediction.evidence is not None:
        prediction.verdict, prediction.reason = combine(prediction.pixel_verdict, prediction.p_fake, prediction.evidence)
    else:
        prediction.verdict, prediction.reason = prediction.pixel_verdict, ""
    prediction.generator, prediction.p_generator = "", None
    named = declared_generator(prediction.evidence) if prediction.verdict == FAKE_VERDICT else ""
    if named:  # the file says which generator made it: that, not the head's guess
        prediction.generator = named
        return prediction
    generators = [g for g in labels[1:] if not is_training_aid(g)]
    if prediction.verdict == FAKE_VERDICT and generators and prediction.generator_probs:
        gen_probs = np.asarray([prediction.generator_probs.get(g, 0.0) for g in generators], np.float64)
        best = int(np.argmax(gen_probs))
        # Which generator, given that the image is AI-generated.
        prediction.p_generator = float(gen_probs[best] / max(gen_probs.sum(), 1e-12))
        known = point.open_set_threshold is None or prediction.p_generator >= point.open_set_threshold
        prediction.generator = generators[best] if known else UNKNOWN_GENERATOR
    return prediction


@dataclass
class ImageScores:
    """Combined scores of one image, and its crops' own."""

    p_fake: float
    source_probs: np.ndarray  # (n_labels,)
    crop_p_fake: np.ndarray  # (n_crops,)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def combine_crops(binary_logits: np.ndarray, source_logits: np.ndarray, temperature: float) -> ImageScores:
    """One image's crop logits -> its scores, by the rule of the module docstring."""
    binary_logits = np.asarray(binary_logits, np.float64)
    source_logits = np.asarray(source_logits, np.float64)
    return ImageScores(
        p_fake=float(_sigmoid(binary_logits.mean() / temperature)),
        source_probs=_softmax(source_logits.mean(axis=0)),
        crop_p_fake=_sigmoid(binary_logits / temperature),
    )


def _is_one_source(x) -> bool:
    if isinstance(x, tuple):  # (name, bytes) is one upload; any other tuple is a list of sources
        return len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], (bytes, bytearray, memoryview))
    return isinstance(x, (str, os.PathLike, Image.Image, bytes, bytearray, memoryview))


class ScoringMixin:
    """What every runtime shares: verdicts from scores, crop combination, and ``predict``.

    Needs ``labels``, ``config``, ``preprocessing``, ``eval()`` and
    ``crop_logits(pixels) -> (binary_logits (B,), source_logits (B, n_labels))`` as numpy.
    """

    labels: list[str]
    config: dict

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    @property
    def temperature(self) -> float:
        return float(self.config.get("temperature", 1.0))

    @property
    def operating_point(self) -> OperatingPoint:
        """The threshold, uncertain band and open-set threshold in this model's config."""
        return OperatingPoint.from_config(self.config)

    @property
    def generators(self) -> list[str]:
        return self.labels[1:]

    def score_batch(self, pixel_values, autocast: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """A batch of crops -> (p_fake (B,), source probabilities (B, n_labels)), each crop alone."""
        binary, source = self.crop_logits(pixel_values, autocast=autocast)
        return _sigmoid(np.asarray(binary, np.float64) / self.temperature), _softmax(np.asarray(source, np.float64))

    def score_inputs(self, inputs: Sequence[ModelInput], batch_size: int = 32, autocast: bool = False) -> list[ImageScores | None]:
        """Score the crops of several images (``batch_size`` crops per forward pass) and combine
        them per image; None for an input without crops (too small to judge)."""
        counts = [x.n_crops for x in inputs]
        if not sum(counts):
            return [None] * len(inputs)
        pixels = np.concatenate([x.pixels for x in inputs if x.n_crops])
        parts = [self.crop_logits(pixels[i:i + batch_size], autocast=autocast) for i in range(0, len(pixels), batch_size)]
        binary = np.concatenate([np.asarray(b, np.float64).reshape(-1) for b, _ in parts])
        source = np.concatenate([np.asarray(s, np.float64).reshape(len(b), -1) for b, s in parts])
        results: list[ImageScores | None] = []
        start = 0
        for n in counts:
            results.append(combine_crops(binary[start:start + n], source[start:start + n], self.temperature) if n else None)
            start += n
        return results

    def make_prediction(self, model_input: ModelInput, scores: ImageScores | None) -> Prediction:
        """An input and its scores -> a :class:`Prediction`, decided by :func:`decide` with this
        model's operating point (and the input's evidence, when it was read)."""
        w, h = model_input.image_size
        if scores is None:
            need = getattr(self.preprocessing, "min_side", 0)
            prediction = Prediction(path=model_input.name, image_size=[w, h], too_small=True,
                                    evidence=model_input.evidence,
                                    note=f"too small to judge: {w}x{h} px, the model needs at least {need} px per side")
        else:
            prediction = Prediction(
                path=model_input.name,
                p_fake=float(scores.p_fake),
                generator_probs={label: float(p) for label, p in zip(self.labels, scores.source_probs)},
                crops=[{"box": list(b), "p_fake": float(p), "scale": sc} for b, p, sc in
                       zip(model_input.boxes, scores.crop_p_fake, model_input.scales or [1.0] * len(model_input.boxes))],
                image_size=[w, h],
                evidence=model_input.evidence,
            )
        return decide(prediction, self.labels, self.operating_point)

    def predict(self, images: Source | Iterable[Source], batch_size: int = 32, crops: int | None = None,
                autocast: bool = False, evidence: bool = True) -> list[Prediction]:
        """Score paths, encoded bytes (or ``(name, bytes)`` pairs) or PIL images, one
        :class:`Prediction` each; unreadable ones carry ``error``. ``crops=N``: N crops per image
        in all, shared between the model's scales (default: the model's own number at each
        scale); ``evidence=False`` skips reading the files' metadata.
        For large folders use :func:`aigi.inference.detect.detect`, which decodes in parallel and streams."""
        if _is_one_source(images):
            images = [images]
        self.eval()
        items = list(images)
        results: list[Prediction] = [Prediction(source_name(x, i)) for i, x in enumerate(items)]
        pending: list[tuple[int, ModelInput]] = []

        def flush() -> None:
            for (i, x), scores in zip(pending, self.score_inputs([x for _, x in pending], batch_size, autocast)):
                results[i] = self.make_prediction(x, scores)
            pending.clear()

        for i, item in enumerate(items):
            try:
                pending.append((i, load_with_evidence(item, self.preprocessing, crops=crops, name=results[i].path,
                                                      evidence=evidence)))
            except ImageDecodeError as e:
                results[i].error = e.reason
            if sum(x.n_crops for _, x in pending) >= batch_size:
                flush()
        flush()
        return results
