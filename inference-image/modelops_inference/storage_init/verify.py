"""Checksums the way GCS reports them: base64 of big-endian CRC32C, base64 of MD5."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import google_crc32c

BLOCK = 1 << 20


def crc32c_b64(path: Path) -> str:
    c = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            c.update(block)
    return base64.b64encode(c.digest()).decode()


def md5_b64(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return base64.b64encode(h.digest()).decode()


def matches(path: Path, size: int, crc32c: str | None, md5: str | None) -> bool:
    """True when the file has the object's size and checksum (CRC32C, else MD5)."""
    try:
        if path.stat().st_size != size:
            return False
    except FileNotFoundError:
        return False
    if crc32c:
        return crc32c_b64(path) == crc32c
    if md5:
        return md5_b64(path) == md5
    return False  # nothing to verify against: never trust it
