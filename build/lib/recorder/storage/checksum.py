"""SHA-256 checksums in the forms S3 uses: per object, per part, and the composite of a multipart upload.

S3 stores a multipart object's SHA-256 as the hash of the concatenated part digests ("composite"), so
verification needs the digests of every part, not one hash of the whole file.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 4 * 1024 * 1024


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def read_range(path: Path, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of a file; pread so concurrent readers never share a file position."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks: list[bytes] = []
        while length > 0:
            chunk = os.pread(fd, min(length, 64 * 1024 * 1024), offset)
            if not chunk:
                raise OSError(f"{path} is shorter than expected (ends before byte {offset})")
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> bytes:
    """Digest of a whole file, read in chunks (hashlib releases the GIL, so this can overlap uploads)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def part_sha256(path: Path, offset: int, length: int) -> bytes:
    return hashlib.sha256(read_range(path, offset, length)).digest()


def composite(part_digests: Iterable[bytes]) -> str:
    """The base64 composite checksum S3 reports for a multipart object (without the `-N` suffix)."""
    return b64(hashlib.sha256(b"".join(part_digests)).digest())


def same_checksum(reported: str | None, expected: str, parts: int | None = None) -> bool:
    """Compare a checksum S3 reported with ours; S3 may append `-N` (the part count) to composite ones."""
    if reported is None:
        return False
    value, _, count = reported.partition("-")
    if count and parts is not None and count != str(parts):
        return False
    return value == expected
