"""Read COCO-format person keypoint annotations (2017 and 2014 folder schemes) with pycocotools."""
from __future__ import annotations

import contextlib
import gc
import io
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pycocotools.coco import COCO

from posenet.data.keypoints import KeypointLayout
from posenet.data.person_store import PersonStore
from posenet.data.targets import keypoint_persons
from posenet.errors import DataError

FOLDERS = ("coco2017", "coco2014")
_SPLITS = {
    "coco2017": ("train2017", "val2017"),
    "coco2014": ("train2014", "val2014", "minival2014", "valminusminival2014", "val2014-rtpose1160"),
}
# Splits that are a list of images of another split, shipped in posenet/data/splits (see its README).
LISTED_SPLITS = {"val2014-rtpose1160": ("val2014", Path(__file__).parent / "splits" / "rtpose_val2014_1160.txt")}


@dataclass(frozen=True)
class SplitFiles:
    """Where one split lives; ``images`` is a slice of the annotation file's image list."""

    annotation_file: Path
    image_dir: Path
    images: slice = field(default_factory=lambda: slice(None))
    # A file of image ids (one per line): the split is those images, in that order.
    image_list: Path | None = None


def split_files(root: str | Path, split: str, folders: str = "coco2017", minival_size: int = 2644) -> SplitFiles:
    """The annotation file and image folder of ``split`` under ``root``.

    The 2014 scheme's minival2014 is the first ``minival_size`` images of val2014 in
    annotation-file order, and valminusminival2014 the rest of val2014; val2014-rtpose1160 the
    1160 val2014 images that the OpenPose release evaluated on (``LISTED_SPLITS``).
    """
    if folders not in _SPLITS:
        raise DataError(f"unknown dataset folder scheme {folders!r}; expected one of {', '.join(FOLDERS)}")
    if split not in _SPLITS[folders]:
        raise DataError(f"unknown split {split!r} for the {folders} folder scheme; expected one of "
                        f"{', '.join(_SPLITS[folders])}")
    root = Path(root)
    if split in LISTED_SPLITS:
        on_disk, image_list = LISTED_SPLITS[split]
        return SplitFiles(root / "annotations" / f"person_keypoints_{on_disk}.json", root / on_disk, image_list=image_list)
    if split in ("minival2014", "valminusminival2014"):
        images = slice(None, minival_size) if split == "minival2014" else slice(minival_size, None)
        split_on_disk = "val2014"
    else:
        images, split_on_disk = slice(None), split
    return SplitFiles(root / "annotations" / f"person_keypoints_{split_on_disk}.json", root / split_on_disk, images)


def _listed_images(image_list: Path, known: set, annotation_file: Path) -> list[int]:
    try:
        ids = [int(line) for line in Path(image_list).read_text().split()]
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the image list {image_list}: {e}") from None
    missing = [i for i in ids if i not in known]
    if missing:
        raise DataError(f"{annotation_file} lacks {len(missing)} of the {len(ids)} images of {image_list.name} "
                        f"(e.g. id {missing[0]})")
    return ids


class CocoPersons:
    """The person annotations of one split of a COCO-format keypoint dataset.

    Images keep the annotation file's order. ``annotations(image_id)`` returns the person
    annotations of an image, crowd regions included (``iscrowd`` 1). ``first_images`` > 0
    keeps only the first that many images holding a non-crowd person with labelled keypoints
    (the overfitting benchmark's images; evaluation then covers those images alone).

    ``store`` holds what the data loaders need of every image in flat arrays
    (:class:`~posenet.data.person_store.PersonStore`): loader workers read that alone. The
    pycocotools index of the file (``coco``; ``annotations``, ``image_info``, ``image_path``
    and ``summary`` read it) is released once the store is built, as it would otherwise hold
    about a gigabyte for COCO train2017 in the main process and, page by page, in every
    worker; it is read again from the file the first time one of them needs it (evaluation,
    in the main process) and is never pickled.
    """

    def __init__(self, root: str | Path, split: str, folders: str = "coco2017", minival_size: int = 2644,
                 first_images: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"dataset root not found: {root} (expected the {folders} folder scheme, see docs/data.md)")
        self.root = root
        self.split = split
        self.files = split_files(root, split, folders, minival_size)
        if first_images < 0:
            raise DataError(f"first_images must be >= 0, got {first_images}")
        self.category_id, self.keypoint_layout, self.store = _index_split(self.files, first_images)
        if not self.files.image_dir.is_dir():
            raise DataError(f"image folder not found: {self.files.image_dir}")
        self.image_ids: list[int] = self.store.image_ids.tolist()
        self._coco: COCO | None = None

    @property
    def coco(self) -> COCO:
        """The pycocotools index of the annotation file (read again on first use after the build)."""
        if self._coco is None:
            self._coco = _load_coco(self.files.annotation_file)
        return self._coco

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_coco"] = None  # a loader worker started by spawn gets the store, not the index
        return state

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, image_id: int) -> dict:
        return self.coco.imgs[image_id]

    def image_path(self, image_id: int) -> Path:
        return self.files.image_dir / self.coco.imgs[image_id]["file_name"]

    def annotations(self, image_id: int) -> list[dict]:
        return [a for a in self.coco.imgToAnns.get(image_id, []) if a["category_id"] == self.category_id]

    def summary(self) -> dict:
        """Counts of what this split holds."""
        persons = [a for i in self.image_ids for a in self.annotations(i)]
        crowd = [a for a in persons if a.get("iscrowd", 0)]
        single = [a for a in persons if not a.get("iscrowd", 0)]
        flags = [v for a in single for v in a.get("keypoints", [])[2::3]]
        with_people = sum(1 for i in self.image_ids if any(not a.get("iscrowd", 0) for a in self.annotations(i)))
        sizes = {(self.coco.imgs[i]["width"], self.coco.imgs[i]["height"]) for i in self.image_ids}
        return {
            "split": self.split,
            "images": len(self.image_ids),
            "images_with_persons": with_people,
            "images_without_persons": len(self.image_ids) - with_people,
            "persons": len(persons),
            "persons_with_keypoints": sum(1 for a in single if a.get("num_keypoints", 0) > 0),
            "crowd_regions": len(crowd),
            "keypoints_visible": flags.count(2),
            "keypoints_occluded": flags.count(1),
            "distinct_image_sizes": len(sizes),
        }


def format_summary(summary: dict) -> str:
    s = summary
    return (
        f"{s['split']}: {s['images']} images ({s['images_without_persons']} without persons), "
        f"{s['persons']} person annotations ({s['persons_with_keypoints']} with keypoints, "
        f"{s['crowd_regions']} crowd), keypoints {s['keypoints_visible']} visible / "
        f"{s['keypoints_occluded']} occluded, {s['distinct_image_sizes']} distinct image sizes"
    )


# Annotation files at least this large are parsed in a forked child process (_index_split).
CHILD_PARSE_BYTES = 32 << 20


def _index_split(files: SplitFiles, first_images: int) -> tuple[int, KeypointLayout, PersonStore]:
    """The person category, its keypoint layout and the split's :class:`PersonStore`.

    A large file is parsed in a child process forked for the purpose, which hands back the
    store's arrays and exits. Parsing COCO train2017 here would leave this process with a
    heap of about a gigabyte of freed blocks: it stays resident until trimmed, and the loader
    workers forked later allocate into its holes, their memory creeping up page by page over
    an epoch. Small files (coco-mini, the synthetic world) are parsed in this process.
    """
    try:
        large = files.annotation_file.stat().st_size >= CHILD_PARSE_BYTES
    except OSError:
        large = False
    if not large or "fork" not in multiprocessing.get_all_start_methods():
        return _parse_split(files, first_images)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(_parse_split, files, first_images, True).result()


# What a child parsing a split keeps until it exits (_parse_split).
_KEPT: list = []


def _parse_split(files: SplitFiles, first_images: int,
                 in_child: bool = False) -> tuple[int, KeypointLayout, PersonStore]:
    """The split's category, layout and store, with the cyclic garbage collector paused: the
    parsed file holds millions of dicts and lists and no cycle, and a collection in between
    visits them all (seconds for COCO train2017); it is freed before the collector resumes.

    ``in_child``: this process exits once it has handed the store over, so the collector stays
    off and the parsed file is left for the exit to drop at once rather than freed object by
    object (another second or so).
    """
    if in_child:
        gc.disable()
        return _parse_split_paused(files, first_images, keep=True)
    with _collector_paused():
        return _parse_split_paused(files, first_images)


def _parse_split_paused(files: SplitFiles, first_images: int,
                        keep: bool = False) -> tuple[int, KeypointLayout, PersonStore]:
    dataset = _read_annotation_file(files.annotation_file)
    if keep:
        _KEPT.append(dataset)
    category_id, layout = _person_category(dataset, files.annotation_file)
    all_ids = [img["id"] for img in dataset["images"]]
    image_ids = all_ids[files.images]
    if files.image_list is not None:
        image_ids = _listed_images(files.image_list, set(all_ids), files.annotation_file)
    # pycocotools' index (imgs, imgToAnns) without the rest of it: a person's annotations in file order
    images = {img["id"]: img for img in dataset["images"]}
    by_image: dict = {}
    for a in dataset["annotations"]:
        if a["category_id"] == category_id:
            by_image.setdefault(a["image_id"], []).append(a)
    if first_images:
        with_keypoints = [i for i in image_ids if keypoint_persons(by_image.get(i, []))]
        if len(with_keypoints) < first_images:
            raise DataError(f"{files.annotation_file}: asked for the first {first_images} images with "
                            f"annotated persons, the split has {len(with_keypoints)}")
        image_ids = with_keypoints[:first_images]
    try:
        store = PersonStore.build(image_ids, images, lambda i: by_image.get(i, []), layout.num_keypoints)
    except (TypeError, ValueError) as e:  # e.g. image ids that are not integers
        raise DataError(f"{files.annotation_file}: {e}") from None
    if not keep:
        del dataset, images, by_image, all_ids, image_ids
        release_freed_memory()
    return category_id, layout, store


def _read_annotation_file(path: Path) -> dict:
    """The parsed annotation file, its structure checked (one DataError naming what is wrong)."""
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with open(path) as f, _collector_paused():
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a COCO annotation file (invalid JSON: {e})") from None
    if not isinstance(dataset, dict):
        raise DataError(f"{path}: not a COCO annotation file (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{path}: not a COCO annotation file (no '{key}' list)")
    for i, img in enumerate(dataset["images"]):
        if not isinstance(img, dict) or not {"id", "file_name", "width", "height"} <= img.keys():
            raise DataError(f"{path}: image entry {i} lacks one of id, file_name, width, height")
    for i, ann in enumerate(dataset["annotations"]):
        if not isinstance(ann, dict) or not {"id", "image_id", "category_id"} <= ann.keys():
            raise DataError(f"{path}: annotation entry {i} lacks one of id, image_id, category_id")
    return dataset


@contextlib.contextmanager
def _collector_paused():
    """No cyclic garbage collection inside (parsing JSON makes millions of dicts and lists and no
    cycle: the collections their allocations set off, each full one visiting every object made
    so far, took about a quarter of the parse of COCO train2017's file)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_coco(path: Path) -> COCO:
    coco = COCO()
    coco.dataset = _read_annotation_file(path)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Freeing a parsed annotation file leaves most of its memory free inside the C heap, where
    it still counts as resident; ``malloc_trim`` returns the free pages, also those between
    live blocks.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _person_category(dataset: dict, path: Path) -> tuple[int, KeypointLayout]:
    cats = [c for c in dataset["categories"] if c.get("keypoints")]
    person = [c for c in cats if c.get("name") == "person"] or cats
    if not person:
        raise DataError(f"{path}: no category with keypoints; is this a person_keypoints file?")
    try:
        return person[0]["id"], KeypointLayout.from_coco_category(person[0])
    except ValueError as e:
        raise DataError(f"{path}: invalid keypoint category: {e}") from None
