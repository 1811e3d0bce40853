"""Writing files so that a reader (or a crash) never sees half of one: the project's one atomic-write helper.

A file is written to a hidden temporary sibling, flushed, then renamed over the target (`os.replace` is
atomic on POSIX within one filesystem). A directory is built in a hidden sibling and renamed into place.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically (parents created); returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: Path, doc: Any, indent: int | None = 2) -> Path:
    """JSON with a trailing newline; values JSON cannot encode are written with `str()`."""
    return atomic_write_text(path, json.dumps(doc, indent=indent, default=str) + "\n")


def copy_atomically(src: Path, dst: Path) -> Path:
    """Copy a file so that `dst` is either absent, its old content, or a complete copy."""
    return atomic_write_bytes(dst, Path(src).read_bytes())


@contextlib.contextmanager
def staged_dir(out: Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory in a hidden sibling and rename it to `out` when the block succeeds.

    On any exception the partial directory is removed and `out` is untouched. `out` may already exist
    only when empty, or when `replace` is set (then the old one is removed after the new one is in place).
    """
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes 0700; outputs are shared with readers
    try:
        yield stage
        if not out.exists():
            os.rename(stage, out)
        elif not replace:
            out.rmdir()  # only an empty directory may be replaced (OSError otherwise)
            os.rename(stage, out)
        elif _exchange(stage, out):  # readers see the old or the new directory, never neither
            shutil.rmtree(stage)  # now holds the old content
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(stage, out)
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported.

    By hand because neither os nor shutil exposes renameat2."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
