"""The HTTP API's response schemas (pydantic): what ``/v1/detect``, ``/v1/health`` and ``/v1/models``
return, and the error body every refusal carries."""

# No ``from __future__ import annotations`` here: FastAPI and pydantic read the annotations
# at run time.
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class Crop(BaseModel):
    box: list[Union[int, float]] = Field(description="[x0, y0, x1, y1] in the image's pixel coordinates")
    p_fake: float
    scale: float = Field(1.0, description="1.0: the image's own pixels; 0.5: this region seen at half size")


class Result(BaseModel):
    """One file. Fields beyond these (newer models) are passed through unchanged."""

    model_config = ConfigDict(extra="allow")
    path: str = Field(description="the uploaded file name")
    p_fake: Optional[float] = Field(None, description="calibrated probability that the image is AI-generated")
    verdict: str = Field("", description="ai-generated, real, or uncertain where the model abstains; the pixel "
                                         "verdict combined with the file's metadata (evidence); empty on error")
    pixel_verdict: str = Field("", description="the verdict from p_fake alone (threshold and uncertain band)")
    reason: str = Field("", description="why the verdict: the evidence rule that decided, or that the pixel verdict stands")
    generator: str = Field("", description="the generator it most resembles (AI-generated verdicts only); 'unknown' "
                                           "when it matches none the model was trained on")
    p_generator: Optional[float] = Field(None, description="probability of that generator, given AI-generated")
    generator_probs: dict[str, float] = Field(default_factory=dict, description="probability of every source label")
    error: str = Field("", description="why the file could not be scored; empty when it was")
    crops: Optional[list[Crop]] = Field(None, description="per-region scores (a heatmap), where the model gives them")
    image_size: Optional[list[int]] = Field(None, description="[width, height] as decoded, upright")
    too_small: Optional[bool] = Field(None, description="the image is smaller than the model's input")
    evidence: Optional[dict[str, Any]] = Field(None, description="findings from the file's metadata")


class DetectResponse(BaseModel):
    results: list[Result]
    threshold: float = Field(description="p_fake at or above which the verdict is ai-generated")
    uncertain_band: Optional[list[float]] = Field(None, description="[low, high]: a p_fake inside is uncertain")
    model: str


class Health(BaseModel):
    status: str = "ok"
    aigi_version: str
    model: str
    labels: list[str]
    threshold: float
    runtime: str
    input_px: int
    max_files: int
    max_mb: float = Field(description="per file")
    max_request_mb: float
    max_pixels: int = Field(description="larger images are refused from their header, before decoding")
    auth: bool = Field(description="whether /v1/detect needs an API key")
    queued: int = Field(description="images waiting for the model")
    in_flight: int = Field(description="requests being served")
    batches: int = Field(description="forward passes so far (this process)")
    images_scored: int = Field(description="images scored so far (this process); / batches = mean batch size")
    pid: int


class ModelInfo(BaseModel):
    name: str
    runtime: str
    labels: list[str]
    generators: list[str]
    threshold: float
    temperature: float
    input_px: int
    backbone: Optional[str] = None
    uncertain_band: Optional[list[float]] = Field(None, description="[low, high]: a p_fake inside is uncertain")
    open_set_threshold: Optional[float] = Field(None, description="p_generator under this: generator 'unknown'")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: unreadable, too_large, unsupported_media_type, ...")
    message: str
    request_id: str = ""


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES = {
    400: "unreadable (a raw body that is not an image) or a bad header",
    401: "unauthorized: a missing or wrong API key (when the server has keys)",
    408: "timeout: the body did not arrive within the deadline",
    413: "too_large, too_many_files, too_many_parts, too_many_pixels",
    415: "unsupported_media_type",
    422: "bad_form: a malformed multipart body, or no 'files' part",
    429: "rate_limited (with Retry-After)",
    503: "overloaded (with Retry-After)",
}


__all__ = ["Crop", "DetectResponse", "ERROR_RESPONSES", "ErrorBody", "ErrorResponse", "Health", "ModelInfo",
           "ModelsResponse", "Result"]
