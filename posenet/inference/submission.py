"""Results for the COCO evaluation server: a predictor over the images of an image-info file.

COCO test-dev2017, where the paper reports its headline AP, has no public annotations: the
server scores a results file. ``predict_split`` runs a predictor (either family, PyTorch or an
ONNX export) over every image that an image-info file lists (``annotations/
image_info_test-dev2017.json``: ``images``, each with ``id`` and ``file_name``), with the
predictor's test-time scales and flip, and writes to ``out``:

- ``person_keypoints_<split>_<name>_results.json``: COCO keypoint results (``image_id``,
  ``category_id`` 1, 51 ``keypoints``, ``score``), the name the server expects;
- the same file zipped (``..._results.zip``), what is uploaded; written only when every listed
  image was processed, unless ``allow_missing``;
- ``missing_images.json`` when some listed image was missing or unreadable: their ids, files
  and reasons.

Images are read in their stored pixel frame (EXIF orientation not applied), as evaluation reads
them: COCO's coordinates refer to it. Every output is written atomically.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from posenet.data.images import read_image
from posenet.errors import DataError, PosenetError
from posenet.evaluation.base import ImageEvaluator
from posenet.utils.io import atomic_path, write_json_atomic

RESULTS_NAME = "person_keypoints_{split}_{name}_results.json"
_NAME = re.compile(r"[A-Za-z0-9-]+")


def split_of(image_info: str | os.PathLike) -> str:
    """The split an image-info file describes, from its name: ``image_info_test-dev2017.json``
    gives ``test-dev2017``; other names give their stem."""
    stem = Path(image_info).stem
    return stem[len("image_info_"):] if stem.startswith("image_info_") else stem


def read_image_info(path: str | os.PathLike) -> list[dict]:
    """The ``images`` entries of an image-info (or annotation) file, checked: each has an
    integer ``id`` and a ``file_name``, ids are unique. PosenetError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PosenetError(f"image-info file not found: {path}")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PosenetError(f"cannot read image-info file {path}: {e}") from None
    images = info.get("images") if isinstance(info, dict) else None
    if not isinstance(images, list) or not images:
        raise PosenetError(f"{path} lists no images (a COCO image-info file has a non-empty 'images' list)")
    for entry in images:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or not entry.get("file_name"):
            raise PosenetError(f"{path}: every image needs an integer 'id' and a 'file_name'; got {str(entry)[:120]}")
    ids = [entry["id"] for entry in images]
    if len(set(ids)) != len(ids):
        raise PosenetError(f"{path}: image ids are not unique")
    return images


def predict_split(predictor, image_info: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
                  name: str, split: str | None = None, allow_missing: bool = False, progress: bool = True,
                  log=print) -> dict:
    """Run ``predictor`` over the images ``image_info`` lists (files in ``images``) and write
    the server's results file and zip to ``out`` (see the module docstring); returns a summary.
    Raises PosenetError after writing the results (and no zip) when listed images could not be
    processed, unless ``allow_missing``."""
    if not _NAME.fullmatch(name or ""):
        raise PosenetError(f"the results name {name!r} must be letters, digits and '-' only "
                           "(the server splits the file name at '_')")
    entries = read_image_info(image_info)
    images = Path(images)
    if not images.is_dir():
        raise PosenetError(f"image folder not found: {images}")
    split = split or split_of(image_info)
    out = Path(out)
    results, missing, people = [], [], 0
    timings = {"network_ms": [], "decode_ms": []}
    for entry in tqdm(entries, desc=f"predict {split}", unit="img", disable=not progress):
        path = images / entry["file_name"]
        try:
            rgb = np.ascontiguousarray(read_image(path)[:, :, ::-1])
        except DataError as e:
            missing.append({"id": entry["id"], "file_name": entry["file_name"], "reason": str(e)})
            continue
        listed = (entry.get("height"), entry.get("width"))
        if None not in listed and tuple(rgb.shape[:2]) != listed:
            log(f"warning: {path} is {rgb.shape[0]}x{rgb.shape[1]}, the image-info file says "
                f"{listed[0]}x{listed[1]}: results are in the pixels read")
        prediction = predictor.run(rgb)
        for k in timings:
            timings[k].append(prediction.timing.get(k, 0.0))
        people += len(prediction.people)
        results += ImageEvaluator.people_results(entry["id"], prediction.people)

    json_path = out / RESULTS_NAME.format(split=split, name=name)
    write_json_atomic(json_path, results)
    zip_path = json_path.with_suffix(".zip")
    missing_path = out / "missing_images.json"
    if missing:
        write_json_atomic(missing_path, missing, indent=1)
    elif missing_path.exists():
        missing_path.unlink()  # from an earlier, incomplete run into the same folder
    complete = not missing
    if complete or allow_missing:
        with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(json_path, json_path.name)
    elif zip_path.exists():
        zip_path.unlink()  # never leave a zip that does not match the results beside it
    summary = {
        "split": split, "listed": len(entries), "processed": len(entries) - len(missing), "missing": len(missing),
        "people": people, "results": str(json_path), "zip": str(zip_path) if complete or allow_missing else None,
        "network_ms": float(np.mean(timings["network_ms"])) if timings["network_ms"] else None,
        "decode_ms": float(np.mean(timings["decode_ms"])) if timings["decode_ms"] else None,
    }
    log(f"{split}: {summary['processed']} of {len(entries)} listed images, {people} people -> {json_path}"
        + (f" and {zip_path.name} (upload that)" if summary["zip"] else ""))
    if missing and not allow_missing:
        first = ", ".join(m["file_name"] for m in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise PosenetError(f"{len(missing)} of {len(entries)} listed images were not processed ({first}; reasons in "
                           f"{missing_path}): {json_path.name} is written without its zip; fix the images, or "
                           "pass --allow-missing to zip an incomplete submission")
    if missing:
        log(f"warning: {len(missing)} listed images were not processed (see {missing_path}); the zip is incomplete")
    return summary


__all__ = ["RESULTS_NAME", "predict_split", "read_image_info", "split_of"]
