"""Crash-safe file writes (a temporary file in the same directory, fsynced, then renamed), and
the self-checking framing jaxnet's files share: a magic line, the payload's SHA-256, the
payload."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    A crash leaves at most a hidden ``.NAME.tmp-*`` file beside ``path``. The file gets the
    permissions an ordinary ``open`` would give it (0666 less the umask; ``mkstemp`` alone
    would leave it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def checksummed(magic: bytes, payload: bytes) -> bytes:
    """``magic`` (a line), the hex SHA-256 of ``payload`` on a line of its own, ``payload``:
    how checkpoints, saved models and exports frame what they write."""
    return magic + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def verified_payload(raw: bytes, magic: bytes) -> bytes | None:
    """The payload of a :func:`checksummed` file's bytes ``raw`` (which start with
    ``magic``), or None when its checksum does not match (truncated or changed)."""
    digest, _, payload = raw[len(magic):].partition(b"\n")
    return payload if hashlib.sha256(payload).hexdigest().encode() == digest else None
