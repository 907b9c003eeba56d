"""Poses for a folder of images (what ``scripts/infer.py`` runs).

For every readable image (jpg, jpeg, png, bmp; any size; gray, RGB, RGBA, palette, 16-bit or
CMYK; turned upright as its EXIF orientation says, coordinates in that frame) in ``images``:
``OUT/json/<name>.json`` (its people), ``OUT/pictures/<name>_{heatmaps,boxes,skeletons,panel}.jpg``
and one entry per person in ``OUT/results.json`` (COCO keypoint results format). Image ids are
the file names' numbers when every name is a number (COCO's naming), else the images' positions
in sorted order; ``OUT/image_ids.json`` records which file got which id. Whatever has an image
name but gives no image (empty, truncated, not an image, unreadable, a directory) is skipped
with one warning line naming it and the reason; if nothing could be read that is an error.
Inputs are only read; every output is written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from posenet.errors import DataError, PosenetError
from posenet.inference.predictor import Predictor, as_rgb
from posenet.utils.io import write_bytes_atomic, write_json_atomic

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Pictures of huge images are scaled down to this longer side.
MAX_PICTURE_SIDE = 1600


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise PosenetError(f"image folder not found: {folder}")
    # directories and other non-files with an image name are listed too: they are skipped with a
    # warning, not silently
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def image_ids(files: list[Path]) -> list[int]:
    stems = [p.stem for p in files]
    if stems and all(s.isdigit() for s in stems) and len(set(map(int, stems))) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


def write_image_atomic(path: Path, image: np.ndarray, quality: int = 90) -> None:
    ok, data = cv2.imencode(path.suffix, image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PosenetError(f"cannot encode {path}")
    write_bytes_atomic(path, data.tobytes())


def _picture_scale(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = MAX_PICTURE_SIDE / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def person_record(person: dict) -> dict:
    return {"keypoints": [round(float(v), 3) for v in np.asarray(person["keypoints"]).reshape(-1)],
            "box": [round(float(v), 2) for v in person["box"]],
            "box_score": round(float(person["box_score"]), 5), "score": round(float(person["score"]), 5)}


def infer_folder(predictor: Predictor, images: str | os.PathLike, out: str | os.PathLike,
                 pictures: bool = True, progress: bool = True, log=print) -> dict:
    """Run ``predictor`` over the folder; returns a summary (counts, mean timings, paths). The
    pictures draw the people whose box score reaches ``predictor.picture_box_threshold``; the
    results files hold them all."""
    files = list_images(images)
    if not files:
        raise PosenetError(f"no images in {images} (looked for {', '.join(EXTENSIONS)})")
    out = Path(out)
    (out / "json").mkdir(parents=True, exist_ok=True)
    if pictures:
        (out / "pictures").mkdir(parents=True, exist_ok=True)
    ids = image_ids(files)
    results, skipped, people, timings = [], [], 0, {"network_ms": [], "decode_ms": []}
    for path, image_id in zip(tqdm(files, desc="infer", unit="img", disable=not progress), ids):
        try:
            rgb = as_rgb(path)
        except DataError as e:
            log(f"warning: skipped {e}")
            skipped.append(str(path))
            continue
        prediction = predictor.run(rgb)
        for k in timings:
            timings[k].append(prediction.timing[k])
        records = [person_record(p) for p in prediction.people]
        people += len(records)
        h, w = prediction.image_size
        write_json_atomic(out / "json" / f"{path.stem}.json",
                          {"file": str(path), "image_id": image_id, "height": h, "width": w, "people": records,
                           "timing_ms": {k: round(v, 2) for k, v in prediction.timing.items()}})
        results += [{"image_id": image_id, "category_id": 1, "keypoints": r["keypoints"], "score": r["score"]}
                    for r in records]
        if pictures:
            for name, picture in predictor.draw(rgb, prediction).items():
                write_image_atomic(out / "pictures" / f"{path.stem}_{name}.jpg", _picture_scale(picture))
    if len(skipped) == len(files):
        raise PosenetError(f"none of the {len(files)} image file(s) in {images} could be read")
    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "image_ids.json", {str(p.name): i for p, i in zip(files, ids)})
    summary = {
        "images": len(files) - len(skipped), "skipped": len(skipped), "people": people,
        "network_ms": float(np.mean(timings["network_ms"])) if timings["network_ms"] else None,
        "decode_ms": float(np.mean(timings["decode_ms"])) if timings["decode_ms"] else None,
        "results": str(out / "results.json"), "pictures": str(out / "pictures") if pictures else None,
    }
    if skipped:
        log(f"skipped {len(skipped)} unreadable file(s): {', '.join(Path(s).name for s in skipped[:5])}"
            + (" ..." if len(skipped) > 5 else ""))
    log(f"{summary['images']} images, {people} people -> {out / 'results.json'}"
        + (f"; pictures in {out / 'pictures'}" if pictures else "")
        + (f"; per image: network {summary['network_ms']:.1f} ms, decoding {summary['decode_ms']:.2f} ms"
           if summary["network_ms"] is not None else ""))
    return summary


__all__ = ["EXTENSIONS", "image_ids", "infer_folder", "list_images", "person_record"]
