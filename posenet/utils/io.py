"""Atomic file writes: a temporary file in the same folder, then a rename, so a reader never
sees a half-written file and an interrupted write leaves the previous file intact."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = None) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent))
