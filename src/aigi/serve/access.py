"""Who may call the API: API keys (compared in constant time) and a per-client rate limit."""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Union


def load_api_keys(path: Union[str, os.PathLike]) -> tuple:
    """One key per line (blank lines and ``#`` comments ignored); ValueError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--api-key-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    keys = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ValueError(f"--api-key-file {path}: no keys in the file (one key per line)")
    return keys


def key_digest(key: str) -> bytes:
    # Fixed-length digests: compare_digest then takes the same time whatever the key's length.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class RateLimiter:
    """Token buckets per client: ``per_min`` requests a minute, bursts of up to ``per_min``."""

    def __init__(self, per_min: float, max_clients: int = 10_000) -> None:
        self.rate, self.capacity, self.max_clients = per_min / 60.0, max(1.0, per_min), max_clients
        self._buckets: OrderedDict = OrderedDict()

    def retry_after(self, client: str) -> Optional[float]:
        """None when ``client`` may go ahead (a token is taken), else seconds until it may."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = None if tokens >= 1 else (1 - tokens) / self.rate
        self._buckets[client] = (tokens - 1 if wait is None else tokens, now)
        while len(self._buckets) > self.max_clients:  # forget the longest-idle clients first
            self._buckets.popitem(last=False)
        return wait


__all__ = ["RateLimiter", "key_digest", "load_api_keys"]
