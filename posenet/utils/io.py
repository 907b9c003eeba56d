"""Atomic file writes: a temporary file in the same folder, flushed to disk, then a rename, so a
reader never sees a half-written file and an interrupted write (an exception, or the process
killed outright) leaves the previous file intact. Temporary files are named
``.<name>.<pid>.tmp`` (``.<name>.<pid>.tmp<suffix>`` for writers that choose the format by the
file name, e.g. OpenCV's video writer: see ``atomic_path``); those of processes that no longer
run (killed mid-write) are removed by the next write of the same file, so they never pile up."""
from __future__ import annotations

import contextlib
import glob
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator

# The resolved config of a run, written beside its checkpoints by the trainer and read back by
# posenet.config.build.run_config.
RUN_CONFIG_NAME = "config.yaml"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """Where this process writes ``path`` before the rename: ``.<name>.<pid>.tmp<suffix>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def remove_stale_temporaries(path: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Remove the temporary files that writes of ``path`` (with ``suffix``) by dead processes
    left behind; returns them."""
    path = Path(path)
    removed = []
    prefix = f".{path.name}."
    end = ".tmp" + suffix
    for tmp in path.parent.glob(glob.escape(prefix) + "*" + glob.escape(end)):
        pid = tmp.name[len(prefix):-len(end)]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """``with atomic_path(path, ".mp4") as tmp: writer(tmp)``, for writers that open the file
    themselves (and may need its extension, ``suffix``): once the block ends without an
    exception, the temporary file (if the writer made one; it must be closed by then) is fsynced
    and renamed to ``path``; on an exception ``path`` is left as it was and the temporary file
    is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, suffix)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        if tmp.exists():
            _fsync_file(tmp)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` is replaced by what was written
    once the block ends without an exception (flushed and fsynced first); on an exception it is
    left as it was and the temporary file is removed."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = None) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent))
