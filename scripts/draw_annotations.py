#!/usr/bin/env python
"""Draw a COCO person-keypoint dataset's annotations on some of its images, as PNG files.

Example:
    python scripts/draw_annotations.py --root data/synthetic --split val2017 --num 4 --out /tmp/vis
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import cv2  # noqa: E402

from posenet.vis import draw_coco_annotations  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="dataset root (COCO 2017 layout)")
    ap.add_argument("--split", default="val2017", help="split name, e.g. train2017 or val2017")
    ap.add_argument("--num", type=int, default=4, help="number of images to draw")
    ap.add_argument("--ids", type=int, nargs="*", help="image ids to draw (default: the first "
                    "--num images that have annotations, in file order)")
    ap.add_argument("--all-images", action="store_true", help="also pick images without annotations")
    ap.add_argument("--out", required=True, help="output folder for the PNG files")
    ap.add_argument("--max-side", type=int, default=0, help="downscale so the longer side is at "
                    "most this many pixels (0: keep the size)")
    ap.add_argument("--prefix", default="", help="file name prefix (default: the image id)")
    ap.add_argument("--ann-ids", action="store_true", help="label boxes with annotation ids")
    args = ap.parse_args(argv)

    ann_file = os.path.join(args.root, "annotations", f"person_keypoints_{args.split}.json")
    if not os.path.isfile(ann_file):
        print(f"error: {ann_file}: no such annotation file", file=sys.stderr)
        return 2
    from pycocotools.coco import COCO
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann_file)
    ids = args.ids or [i for i in sorted(coco.getImgIds())
                       if args.all_images or coco.getAnnIds(imgIds=i)][: args.num]
    os.makedirs(args.out, exist_ok=True)
    for n, image_id in enumerate(ids):
        info = coco.loadImgs(image_id)[0]
        path = os.path.join(args.root, args.split, info["file_name"])
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            print(f"error: {path}: cannot read image", file=sys.stderr)
            return 2
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        out = draw_coco_annotations(image, anns, show_ids=args.ann_ids)
        if args.max_side and max(out.shape[:2]) > args.max_side:
            f = args.max_side / max(out.shape[:2])
            out = cv2.resize(out, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        name = f"{args.prefix}{n}.png" if args.prefix else f"{image_id:012d}.png"
        cv2.imwrite(os.path.join(args.out, name), out, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{os.path.join(args.out, name)}: {len(anns)} annotations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
