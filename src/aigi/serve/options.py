"""The limits and switches of one ``aigi serve`` process (its flags), as :class:`ServeOptions`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..io.decode import DECODE_WORKERS
from ..io.uploads import BodyLimits

MAX_FILES_PER_REQUEST = 64
# Lower than the 256 MB aigi detect accepts from disk: a request's files are all held in memory.
MAX_UPLOAD_BYTES = 50 * 2**20
MAX_REQUEST_BYTES = 100 * 2**20


@dataclass(frozen=True)
class ServeOptions:
    """Limits and switches of one server process (the ``aigi serve`` flags)."""

    max_files: int = MAX_FILES_PER_REQUEST
    max_bytes: int = MAX_UPLOAD_BYTES  # per file
    max_request_bytes: int = MAX_REQUEST_BYTES  # whole body, multipart overhead included
    body_timeout_s: float = 60.0  # the whole body must arrive within this
    max_batch: int = 32  # images per forward pass
    max_wait_ms: float = 5.0  # how long an idle model waits for more images to batch
    max_queue: int = 256  # images waiting for the model; more -> 503
    max_inflight: int = 64  # requests being read, decoded or scored at once; more -> 503
    decode_threads: int = DECODE_WORKERS
    api_keys: tuple = ()
    cors_origins: tuple = ()
    rate_limit_per_min: float = 0.0  # per client (API key, else address); 0 = off
    evidence: bool = True  # read each upload's metadata (aigi.forensics.evidence); the verdict follows it
    crops: Optional[int] = None  # crops per image in all (--crops N); None: the model's own at each scale

    def body_limits(self) -> BodyLimits:
        return BodyLimits(self.max_files, self.max_bytes, self.max_request_bytes, self.body_timeout_s)


__all__ = ["MAX_FILES_PER_REQUEST", "MAX_REQUEST_BYTES", "MAX_UPLOAD_BYTES", "ServeOptions"]
