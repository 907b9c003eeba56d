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

``batch_size`` > 1 runs the images through the network in batches (``Predictor.run_batch``) and
``workers`` > 0 reads, decodes and prepares them (``InputPlan``: geometry and warped inputs) in
DataLoader worker processes while the network runs, at any batch size. A batch only ever holds
images whose inputs have the same size once rounded up to the model's divisor (``batch_key``:
coco's 640x480 photos make one group, 480x640 another), so no image is padded beyond what the
model pads it to alone and every image gets the people of one at a time, up to the rounding of
batched convolutions: padding to a larger common size would change what the network sees near
an image's border and beyond (``docs/inference.md``). Images wait in a group until it is full;
at most ``4 * batch_size`` wait (the fullest group then runs) and the groups left at the end run
as they are. The outputs are those of one at a time, in sorted file order; unreadable files are
skipped with the same warning line (workers pass the reason on). A predictor without
``run_batch`` (``OnnxPredictor``: its graph has batch 1) runs one image at a time; workers
still read the images ahead of it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from posenet.data.dataset import install_cv2_fork_guard
from posenet.errors import ConfigError, DataError, PosenetError
from posenet.inference.predictor import InputPlan, Predictor, as_rgb, batch_key, size_divisor
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


class FolderImages(torch.utils.data.Dataset):
    """Item ``i``: ``(i, rgb, prepared, problem)`` of the ``i``-th file: the RGB image (None when
    ``keep_rgb`` is off and it was prepared), its inputs made by ``plan`` (None without a plan),
    or, for a file that gives no image, None, None and the reason (a worker never raises
    ``DataError``)."""

    def __init__(self, files: list[Path], plan: InputPlan | None, keep_rgb: bool = True):
        self.files, self.plan, self.keep_rgb = list(files), plan, keep_rgb

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            rgb = as_rgb(self.files[i])
        except DataError as e:
            return i, None, None, str(e)
        prepared = self.plan(rgb) if self.plan is not None else None
        return i, rgb if self.keep_rgb or prepared is None else None, prepared, None


def _as_is(item):
    return item


def folder_items(files: list[Path], plan: InputPlan | None, keep_rgb: bool, workers: int):
    """``FolderImages`` items in file order: in this process, or from ``workers`` DataLoader
    worker processes that read ahead."""
    images = FolderImages(files, plan, keep_rgb)
    if workers == 0:
        return (images[i] for i in range(len(images)))
    install_cv2_fork_guard()  # forked workers start with one OpenCV thread: they share the cores with the network
    return iter(torch.utils.data.DataLoader(images, batch_size=None, shuffle=False, num_workers=workers,
                                            collate_fn=_as_is))


def check_loader(batch_size: int, workers: int, batches: bool = True) -> None:
    """ConfigError for a batch size below 1, fewer than 0 workers, or a batch size above 1 for a
    predictor that runs one image at a time (``batches`` off: an ONNX export)."""
    if batch_size < 1:
        raise ConfigError(f"the batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"the number of loader workers must be 0 or more, got {workers}")
    if batch_size > 1 and not batches:
        raise ConfigError(f"batch size {batch_size}: an ONNX export runs one image at a time (its graph has "
                          "batch 1); loader workers (--workers) still read the images ahead of it")


def infer_folder(predictor: Predictor, images: str | os.PathLike, out: str | os.PathLike,
                 pictures: bool = True, progress: bool = True, log=print, batch_size: int = 1,
                 workers: int = 0) -> dict:
    """Run ``predictor`` over the folder; returns a summary (counts, mean timings per image,
    wall seconds and images per second, the latter also after the first batch, paths). The
    pictures draw the people whose box score reaches ``predictor.picture_box_threshold``; the
    results files hold them all. ``batch_size`` and ``workers``: see the module's note (1 and
    0: one image at a time, read in this process)."""
    batches = hasattr(predictor, "run_batch")
    check_loader(batch_size, workers, batches)
    files = list_images(images)
    if not files:
        raise PosenetError(f"no images in {images} (looked for {', '.join(EXTENSIONS)})")
    out = Path(out)
    (out / "json").mkdir(parents=True, exist_ok=True)
    if pictures:
        (out / "pictures").mkdir(parents=True, exist_ok=True)
    ids = image_ids(files)
    plan = predictor.input_plan if batches and (batch_size > 1 or workers > 0) else None
    divisor = size_divisor(predictor.model) if plan is not None else None
    records, skipped, people, timings = {}, [], 0, {"network_ms": [], "decode_ms": []}
    bar = tqdm(total=len(files), desc="infer", unit="img", disable=not progress)
    start, first = time.perf_counter(), None

    def finish(items, predictions):
        nonlocal people, first
        for (i, rgb, _, _), prediction in zip(items, predictions):
            path, image_id = files[i], ids[i]
            for k in timings:
                timings[k].append(prediction.timing[k])
            found = [person_record(p) for p in prediction.people]
            people += len(found)
            h, w = prediction.image_size
            write_json_atomic(out / "json" / f"{path.stem}.json",
                              {"file": str(path), "image_id": image_id, "height": h, "width": w, "people": found,
                               "timing_ms": {k: round(v, 2) for k, v in prediction.timing.items()}})
            records[i] = [{"image_id": image_id, "category_id": 1, "keypoints": r["keypoints"], "score": r["score"]}
                          for r in found]
            if pictures:
                for name, picture in predictor.draw(rgb, prediction).items():
                    write_image_atomic(out / "pictures" / f"{path.stem}_{name}.jpg", _picture_scale(picture))
        bar.update(len(items))
        if first is None:
            first = (time.perf_counter() - start, len(items))

    def run(items):
        if items[0][2] is None:  # not prepared: one image at a time, as predictor.run does it
            finish(items, [predictor.run(items[0][1])])
        else:
            finish(items, predictor.run_batch([item[2] for item in items]))

    groups: dict[tuple, list] = {}
    for item in folder_items(files, plan, pictures, workers):
        i, _, prepared, problem = item
        if problem is not None:
            log(f"warning: skipped {problem}")
            skipped.append(str(files[i]))
            bar.update(1)
            continue
        if batch_size == 1 or prepared is None:
            run([item])
            continue
        key = batch_key(prepared, divisor)
        group = groups.setdefault(key, [])
        group.append(item)
        if len(group) == batch_size:
            run(groups.pop(key))
        elif sum(map(len, groups.values())) >= 4 * batch_size:
            run(groups.pop(max(groups, key=lambda k: len(groups[k]))))
    for key in list(groups):
        run(groups.pop(key))
    bar.close()
    seconds = time.perf_counter() - start
    if len(skipped) == len(files):
        raise PosenetError(f"none of the {len(files)} image file(s) in {images} could be read")
    write_json_atomic(out / "results.json", [r for i in sorted(records) for r in records[i]])
    write_json_atomic(out / "image_ids.json", {str(p.name): i for p, i in zip(files, ids)})
    done = len(records)
    summary = {
        "images": done, "skipped": len(skipped), "people": people,
        "network_ms": float(np.mean(timings["network_ms"])) if timings["network_ms"] else None,
        "decode_ms": float(np.mean(timings["decode_ms"])) if timings["decode_ms"] else None,
        "seconds": seconds, "images_per_s": done / seconds,
        "steady_images_per_s": (done - first[1]) / (seconds - first[0]) if done > first[1] else None,
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


__all__ = ["EXTENSIONS", "FolderImages", "check_loader", "folder_items", "image_ids", "infer_folder", "list_images",
           "person_record"]
