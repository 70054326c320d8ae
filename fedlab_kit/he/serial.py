"""SEAL objects to and from bytes (``tenseal.sealapi`` saves and loads through paths only).

A scratch file on tmpfs (``/dev/shm``) when there is one, removed right after.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from ..errors import InternalError, ProtocolError

_SCRATCH_DIR = ("/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)
                else None)


@contextmanager
def scratch() -> Iterator[str]:
    """A fresh scratch file (tmpfs when there is one), removed afterwards whatever happens."""
    fd, path = tempfile.mkstemp(prefix="fedlab-seal-", dir=_SCRATCH_DIR)
    os.close(fd)
    try:
        yield path
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)


def to_bytes(obj: Any) -> bytes:
    with scratch() as path:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()


def from_bytes(obj: Any, data: bytes | memoryview, *context: Any, own: bool = False) -> Any:
    """Load ``obj`` from ``data``: a peer's bytes (invalid ones are a ProtocolError) or, with
    ``own``, this party's own (invalid ones are a bug: InternalError)."""
    with scratch() as path:
        with open(path, "wb") as f:
            f.write(data)
        try:
            obj.load(*context, path)
        except (RuntimeError, ValueError) as exc:
            if own:
                raise InternalError(f"cannot load this party's own SEAL object: {exc}") from exc
            raise ProtocolError(f"invalid encrypted object from peer: {exc}") from exc
    return obj
