"""Writing files so that nobody ever finds half of one.

Every file lipt writes (restored images, weights, checkpoints, ONNX models, reports) is written
to a hidden temporary file beside its target and renamed onto the target only once it is
complete and on disk; a failure or an interruption deletes the temporary file and leaves
whatever was at the target untouched. The temporary file is created with the mode any new file
gets (0o666 less the umask), not `tempfile.mkstemp`'s owner-only 0o600, so the rename gives the
result ordinary permissions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new, empty temporary path beside `target` for the caller to write (by name, so
    libraries that want a path can write it); on a clean exit flush it to disk and rename it
    onto `target`, on any exception delete it. Raises OSError when the folder is not writable.
    """
    target = Path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(temp, flags, 0o666))
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random names taken
        raise FileExistsError(f"cannot create a temporary file in {target.parent}")
    try:
        yield temp
        _fsync(temp, os.O_RDWR)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    if os.name == "posix":  # make the rename itself durable; best effort
        with contextlib.suppress(OSError):
            _fsync(target.parent, os.O_RDONLY)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically (see `replacing`)."""
    with replacing(target) as temp:
        temp.write_bytes(data)


def _fsync(path: Path, flags: int) -> None:
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


__all__ = ["replacing", "write_bytes"]
