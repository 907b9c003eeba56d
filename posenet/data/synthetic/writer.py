"""Writing a synthetic dataset in the COCO 2017 layout, in parallel and deterministically."""
from __future__ import annotations

import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import os
import time
from pathlib import Path

import cv2

from posenet.data.keypoints import COCO_PERSON
from posenet.data.synthetic.generator import SyntheticCocoGenerator
from posenet.utils.io import write_text_atomic

SPLIT_DIRS = {"train": "train2017", "val": "val2017"}
# Image ids never collide between the splits: val ids start at 10,000,001. Annotation ids are
# image_id * 100 + k (at most 100 annotations per image), independent of the worker count.
IMAGE_ID_OFFSET = {"train": 0, "val": 10_000_000}
ANNOTATIONS_PER_IMAGE = 100

_worker: dict = {}


def _init_worker(generator: SyntheticCocoGenerator, out_dir: str, seed: int) -> None:
    cv2.setNumThreads(1)
    _worker.update(generator=generator, out_dir=out_dir, seed=seed)


def _make_image(task: tuple[str, int]) -> tuple[dict, list[dict], bool]:
    split, index = task
    gen: SyntheticCocoGenerator = _worker["generator"]
    sample = gen.sample(_worker["seed"], split, index)
    image_id = IMAGE_ID_OFFSET[split] + index + 1
    file_name = f"{image_id:012d}.jpg"
    path = os.path.join(_worker["out_dir"], SPLIT_DIRS[split], file_name)
    with open(path, "wb") as f:
        f.write(gen.encode(sample.image))
    entry = {"id": image_id, "file_name": file_name, "width": sample.width, "height": sample.height,
             "license": 0}
    anns = []
    for k, ann in enumerate(sample.annotations):
        anns.append({"id": image_id * ANNOTATIONS_PER_IMAGE + k, "image_id": image_id, **ann})
    return entry, anns, sample.is_grayscale


def _split_stats(images: list[dict], anns: list[dict], gray: int) -> dict:
    persons = [a for a in anns if not a["iscrowd"]]
    with_kp = [a for a in persons if a["num_keypoints"] > 0]
    v = [a["keypoints"][2::3] for a in with_kp]
    flat = [x for vs in v for x in vs]
    with_people = {a["image_id"] for a in anns}
    areas = [a["area"] for a in persons]
    widths, heights = [im["width"] for im in images], [im["height"] for im in images]
    return {
        "images": len(images),
        "grayscale_images": gray,
        "images_without_persons": sum(1 for im in images if im["id"] not in with_people),
        "persons": len(persons),
        "persons_with_keypoints": len(with_kp),
        "unannotated_persons": len(persons) - len(with_kp),
        "crowd_regions": sum(1 for a in anns if a["iscrowd"]),
        "keypoints_visible": flat.count(2),
        "keypoints_occluded": flat.count(1),
        "keypoints_outside": flat.count(0),
        "persons_small": sum(1 for a in areas if a < 32 ** 2),
        "persons_medium": sum(1 for a in areas if 32 ** 2 <= a < 96 ** 2),
        "persons_large": sum(1 for a in areas if a >= 96 ** 2),
        "width_range": [min(widths, default=0), max(widths, default=0)],
        "height_range": [min(heights, default=0), max(heights, default=0)],
    }


def write_synthetic_coco(out_dir, num_train: int, num_val: int, seed: int = 0, workers: int = 1,
                         generator: SyntheticCocoGenerator | None = None,
                         progress: bool = True) -> dict:
    """Write ``num_train`` + ``num_val`` synthetic images in the COCO 2017 layout under ``out_dir``:
    ``annotations/person_keypoints_{train,val}2017.json`` and ``{train,val}2017/*.jpg``.

    Image ``i`` of a split depends only on (``seed``, split, ``i``), so the files are
    byte-identical for any ``workers`` and for any size of the other split. Returns a summary
    (per split counts of images, persons, keypoints by visibility, crowd regions, sizes, and
    the time taken); ``format_summary`` prints it.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got train={num_train} val={num_val}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    generator = generator or SyntheticCocoGenerator()
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for d in SPLIT_DIRS.values():
        (out / d).mkdir(exist_ok=True)

    tasks = [("train", i) for i in range(num_train)] + [("val", i) for i in range(num_val)]
    start = time.perf_counter()
    results = []
    workers = max(1, int(workers))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), desc="synthetic COCO", unit="img", dynamic_ncols=True)
    try:
        if workers == 1 or len(tasks) <= 1:
            _init_worker(generator, str(out), int(seed))
            for t in tasks:
                results.append(_make_image(t))
                if bar:
                    bar.update()
        else:
            # spawn: safe even when the caller has imported torch or started threads. An executor,
            # not a Pool: a worker that dies (e.g. a caller's script without the __main__ guard
            # that spawn needs) breaks it with an error instead of being restarted forever.
            ctx = mp.get_context("spawn")
            chunk = max(1, min(16, len(tasks) // (4 * workers)))
            try:
                with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                         initargs=(generator, str(out), int(seed))) as pool:
                    for r in pool.map(_make_image, tasks, chunksize=chunk):
                        results.append(r)
                        if bar:
                            bar.update()
            except BrokenProcessPool:
                raise RuntimeError(
                    "a synthetic-data worker process died; when calling write_synthetic_coco with "
                    "workers > 1 from a script, guard the call with `if __name__ == \"__main__\":`"
                ) from None
    finally:
        if bar:
            bar.close()
    seconds = time.perf_counter() - start

    summary = {"out_dir": str(out), "seed": int(seed), "workers": workers, "splits": {}}
    offset = 0
    for split, n in (("train", num_train), ("val", num_val)):
        part = results[offset:offset + n]
        offset += n
        images = [e for e, _, _ in part]
        anns = [a for _, aa, _ in part for a in aa]
        gray = sum(int(g) for _, _, g in part)
        data = {
            "info": {"description": "posenet synthetic person keypoints", "version": "1.0",
                     "year": 2026, "contributor": "posenet", "seed": int(seed)},
            "licenses": [{"id": 0, "name": "generated", "url": ""}],
            "images": images,
            "annotations": anns,
            "categories": [COCO_PERSON.coco_category()],
        }
        write_text_atomic(out / "annotations" / f"person_keypoints_{SPLIT_DIRS[split]}.json",
                          json.dumps(data, separators=(",", ":")))
        summary["splits"][split] = _split_stats(images, anns, gray)
    summary["seconds"] = seconds
    summary["ms_per_image"] = 1000.0 * seconds / max(1, len(tasks))
    return summary


def format_summary(summary: dict) -> str:
    """A few human-readable lines about a ``write_synthetic_coco`` summary."""
    lines = [f"wrote {summary['out_dir']} (seed {summary['seed']}) in {summary['seconds']:.1f} s "
             f"({summary['ms_per_image']:.1f} ms/image, {summary['workers']} worker(s))"]
    for split, s in summary["splits"].items():
        lines.append(
            f"  {split}: {s['images']} images ({s['grayscale_images']} grayscale, "
            f"{s['images_without_persons']} without persons), sizes {s['width_range'][0]}-"
            f"{s['width_range'][1]} x {s['height_range'][0]}-{s['height_range'][1]} px")
        lines.append(
            f"    persons {s['persons']} ({s['persons_with_keypoints']} with keypoints, "
            f"{s['unannotated_persons']} without; small/medium/large {s['persons_small']}/"
            f"{s['persons_medium']}/{s['persons_large']}), crowd regions {s['crowd_regions']}")
        lines.append(
            f"    keypoints visible {s['keypoints_visible']}, occluded {s['keypoints_occluded']}, "
            f"outside {s['keypoints_outside']}")
    return "\n".join(lines)
