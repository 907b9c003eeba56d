"""Tracking, smoothing and the video loop measured on the synthetic video with known identities
(``posenet.data.synthetic.video``): ``python scripts/benchmark.py track [--checkpoint CKPT]``.

Protocol. The videos (seeds 0, 1 and 2 unless told; each 60 frames of 256 x 160 at 10 fps, one
person standing still and four walking across, crossing in pairs) are tracked by
``portable.tracking.Tracker`` with the config's ``video`` section, given (a) the ground-truth
poses (every labelled keypoint with score 1, the annotation's box: the tracker's ceiling) and
(b) with ``--checkpoint`` a model's people (``families.load_predictor``, the frames at their own size:
``infer.input_size`` = the frame's longer side; the people of the video loop: box score at or
above ``infer.picture_box_threshold``). Ground-truth persons with at least one labelled keypoint
count; in each frame they are matched to the tracked people one-to-one, best first, at OKS 0.5
or more (COCO's formula, the annotation's area, the ground truth's labelled keypoints).

- found: ground-truth persons matched to a person, of all.
- ID switches: times a ground-truth track is matched to another id than at its previous match.
- right id: ground-truth persons matched to the id assigned to their track, of all; each
  ground-truth track is assigned at most one id and each id at most one track, so as to
  maximise the persons with their id (the IDF1 assignment; ``scipy``'s Hungarian method).
- jitter: the still person's keypoints: the mean (and the median: the mean counts the rare
  jumps of a keypoint given to a walker) distance (px) a keypoint moved from one frame to the
  next where it is visible (labelled 2: not hidden by a walker) and found in both; its ground
  truth does not move. Without and with One-Euro smoothing (``video.min_cutoff``, ``video.beta``).
- error: the mean distance (px) of the matched persons' found keypoints to their labelled
  positions, every person (what smoothing costs walkers in lag).
- frames/s: ``VideoDemo`` over the first video's frames writing the mp4 and the JSON lines,
  serial, pipelined, and (on the CPU) pipelined with the decoding in the writing thread as on a
  GPU, in interleaved rounds, the median of each (wall clock of the whole loop), beside the
  network and decoding ms per frame (what the threads cannot overlap on one model).

Counts are summed over the videos, pixel figures averaged over all their samples.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from posenet.data.keypoints import COCO_PERSON
from posenet.data.synthetic.video import SyntheticVideo, read_video_annotations, write_synthetic_video
from posenet.errors import DataError
from posenet.families import load_predictor
from posenet.inference.predictor import as_rgb
from posenet.inference.video import decodes_apart, frame_people, run_video
from posenet.portable.matching import best_first_matching
from posenet.portable.tracking import Tracker, keypoint_similarity

MATCH_OKS = 0.5


# --------------------------------------------------------------------------- inputs


def ground_truth_people(gt_frames: Sequence[Sequence[dict]]) -> list[list[dict]]:
    """The ground truth as a tracker's input: per frame the persons with a labelled keypoint,
    keypoints with score 1 where labelled (0 elsewhere), the annotation's box, scores 1."""
    frames = []
    for persons in gt_frames:
        people = []
        for p in persons:
            if p["num_keypoints"] < 1:
                continue
            kps = p["keypoints"].copy()
            kps[:, 2] = (kps[:, 2] > 0).astype(np.float64)
            people.append({"keypoints": kps, "box": p["box"].copy(), "box_score": 1.0, "score": 1.0})
        frames.append(people)
    return frames


def predicted_people(predictor, files: Sequence[Path], progress: bool = False) -> list[list[dict]]:
    """The video loop's people of each frame (``inference.video.frame_people``)."""
    return [frame_people(predictor, predictor.run(as_rgb(path)))
            for path in tqdm(files, desc="predict", unit="frame", disable=not progress)]


def track(frames: Sequence[Sequence[dict]], tracker: Tracker, fps: float) -> list[list[dict]]:
    """``frames`` through ``tracker`` (reset first), time stamps frame / fps."""
    tracker.reset()
    return [tracker.update(people, i / fps) for i, people in enumerate(frames)]


# --------------------------------------------------------------------------- metrics


def match(people: Sequence[dict], persons: Sequence[dict], sigmas, threshold: float = MATCH_OKS) -> list[tuple]:
    """(person index, ground-truth index, OKS) pairs, one-to-one best first at OKS >= threshold;
    ground-truth persons without a labelled keypoint are never matched."""
    if not people or not persons:
        return []
    gt = np.stack([p["keypoints"] for p in persons])
    gt_scores = gt.copy()
    gt_scores[:, :, 2] = (gt[:, :, 2] > 0).astype(np.float64)
    predicted = np.stack([np.asarray(p["keypoints"], dtype=np.float64) for p in people])  # a copy
    predicted[:, :, 2] = 1.0  # COCO: every labelled keypoint counts, whatever the predicted score
    oks, common = keypoint_similarity(predicted, gt_scores, sigmas, [p["area"] for p in persons], 0.5)
    score = np.where((oks >= threshold) & (common > 0), oks, -np.inf)
    chosen = best_first_matching(score[None])[0]
    return [(i, int(j), float(oks[i, j])) for i, j in enumerate(chosen) if j >= 0]


def tracking_metrics(gt_frames: Sequence[Sequence[dict]], tracked: Sequence[Sequence[dict]],
                     sigmas=COCO_PERSON.sigmas) -> dict:
    """Found, ID switches, right id (the module's docstring) of tracked people against the
    ground truth; also the ids given and the keypoint error (px)."""
    total = found = switches = 0
    last: dict[int, int] = {}
    pairs: list[tuple[int, int]] = []
    errors = []
    ids = set()
    for persons, people in zip(gt_frames, tracked):
        persons = [p for p in persons if p["num_keypoints"] >= 1]
        total += len(persons)
        ids.update(p["track_id"] for p in people)
        for i, j, _ in match(people, persons, sigmas):
            gt_id, track_id = persons[j]["track_id"], people[i]["track_id"]
            found += 1
            if gt_id in last and last[gt_id] != track_id:
                switches += 1
            last[gt_id] = track_id
            pairs.append((gt_id, track_id))
            kps, gt = np.asarray(people[i]["keypoints"]), persons[j]["keypoints"]
            both = (gt[:, 2] > 0) & (kps[:, 2] > 0)
            errors.extend(np.linalg.norm(kps[both, :2] - gt[both, :2], axis=1))
    right = 0
    if pairs:
        gts = sorted({g for g, _ in pairs})
        tracks = sorted({t for _, t in pairs})
        counts = np.zeros((len(gts), len(tracks)))
        for g, t in pairs:
            counts[gts.index(g), tracks.index(t)] += 1
        rows, cols = linear_sum_assignment(-counts)
        right = int(counts[rows, cols].sum())
    return {"persons": total, "found": found, "id_switches": switches, "right_id": right,
            "found_fraction": found / total if total else None, "right_fraction": right / total if total else None,
            "ids": len(ids), "gt_tracks": len({p["track_id"] for ps in gt_frames for p in ps if p["num_keypoints"]}),
            "error_px": float(np.mean(errors)) if errors else None, "error_samples": len(errors)}


def still_jitter(gt_frames: Sequence[Sequence[dict]], tracked: Sequence[Sequence[dict]], still_ids: Sequence[int],
                 sigmas=COCO_PERSON.sigmas, keypoint_threshold: float = 0.05) -> dict:
    """The still people's keypoint jitter (the module's docstring): mean px a keypoint moved
    between two consecutive frames where it is visible (labelled 2) and found in both."""
    moves = []
    previous: dict[int, tuple] = {}
    for persons, people in zip(gt_frames, tracked):
        current = {}
        for i, j, _ in match(people, persons, sigmas):
            gt = persons[j]
            if gt["track_id"] in still_ids:
                kps = np.asarray(people[i]["keypoints"])
                current[gt["track_id"]] = (kps, (gt["keypoints"][:, 2] == 2) & (kps[:, 2] >= keypoint_threshold))
        for tid, (kps, ok) in current.items():
            if tid in previous:
                before, ok_before = previous[tid]
                both = ok & ok_before
                moves.extend(np.linalg.norm(kps[both, :2] - before[both, :2], axis=1))
        previous = current
    return {"jitter_px": float(np.mean(moves)) if moves else None,
            "median_px": float(np.median(moves)) if moves else None, "keypoint_moves": len(moves),
            "moves": np.asarray(moves)}


# --------------------------------------------------------------------------- the benchmark


def make_video(folder: Path, seed: int = 0, **world) -> Path:
    """The synthetic video of ``seed`` written under ``folder`` (``SyntheticVideo(**world)``)."""
    write_synthetic_video(folder, seed=seed, video=SyntheticVideo(**world), progress=False)
    return folder


def loop_speed(predictor, folder: Path, rounds: int = 3, progress: bool = False) -> dict:
    """Frames/s of ``VideoDemo`` over the frames in ``folder``, writing an mp4 and JSON lines,
    serial, pipelined and (where that is not the default) pipelined with the decoding in the
    writing thread, in interleaved rounds (the order alternating); the medians."""
    modes = {"serial": (False, None), "pipelined": (True, None), "decoding apart": (True, True)}
    if decodes_apart(predictor):
        del modes["decoding apart"]  # the default already
    samples: dict[str, list[dict]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for mode in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
                pipeline, apart = modes[mode]
                summary = run_video(predictor, folder, Path(tmp) / "poses.mp4", json=Path(tmp) / "poses.jsonl",
                                    progress=progress, log=lambda *_: None, pipeline=pipeline, decode_apart=apart)
                samples[mode].append(summary)
    return {mode: {"fps": statistics.median(s["fps"] for s in runs), "samples": [s["fps"] for s in runs],
                   "network_ms": statistics.median(s["network_ms"] for s in runs),
                   "decode_ms": statistics.median(s["decode_ms"] for s in runs)}
            for mode, runs in samples.items()}


def _combine(rows: Sequence[dict]) -> dict:
    """Per-video metrics summed (counts) and averaged over their samples (px)."""
    total = {k: sum(r[k] for r in rows) for k in ("persons", "found", "id_switches", "right_id", "ids", "gt_tracks",
                                                  "error_samples")}
    total["found_fraction"] = total["found"] / total["persons"] if total["persons"] else None
    total["right_fraction"] = total["right_id"] / total["persons"] if total["persons"] else None
    total["error_px"] = (sum(r["error_px"] * r["error_samples"] for r in rows if r["error_samples"])
                         / total["error_samples"] if total["error_samples"] else None)
    return total


def _combine_jitter(rows: Sequence[dict]) -> dict:
    moves = np.concatenate([r["moves"] for r in rows]) if rows else np.zeros(0)
    return {"jitter_px": float(moves.mean()) if len(moves) else None,
            "median_px": float(np.median(moves)) if len(moves) else None, "keypoint_moves": len(moves)}


def run(section, checkpoint: str | None = None, overrides: Sequence[str] = (), seeds: Sequence[int] = (0,),
        rounds: int = 3, smoothing: Sequence[tuple[float, float]] = (), progress: bool = True, **world) -> dict:
    """The benchmark's figures over the videos of ``seeds`` (``SyntheticVideo(**world)``),
    counts summed over them. ``section``: the config's ``video`` section (the tracker's
    options); ``smoothing``: more (min_cutoff, beta) pairs for the jitter table beside the
    section's; ``rounds``: of the loop's speed, on the first video (0: not measured)."""
    options = {k: section[k] for k in section if k not in ("track", "smooth")}
    pairs = list(dict.fromkeys([(float(section["min_cutoff"]), float(section["beta"])), *smoothing]))
    result = {"options": dict(options), "seeds": list(seeds), "rows": {}}
    rows: dict[str, list] = {"ground truth": [], "model": []}
    jitters: dict[str, list] = {}
    predictor = None
    if checkpoint:
        world_side = max(int(world.get("width", 256)), int(world.get("height", 160)))
        predictor = load_predictor(checkpoint, None, [f"infer.input_size={world_side}", *overrides])
        result["predictor"], result["checkpoint"] = predictor.describe(), str(checkpoint)
    base = dict(keypoint_threshold=float(predictor.keypoint_threshold)) if predictor else {}
    plain = Tracker(COCO_PERSON.sigmas, **base, **{k: v for k, v in options.items() if k not in ("min_cutoff", "beta")})
    with tempfile.TemporaryDirectory() as tmp:
        for n, seed in enumerate(seeds):
            folder = make_video(Path(tmp) / f"video{seed}", seed, **world)
            gt_frames, info = read_video_annotations(folder)
            fps = float(info["fps"])
            if n == 0:
                result["video"] = {"frames": len(gt_frames), "fps": fps, "world": info.get("world"),
                                   "still": len(info.get("still_track_ids", []))}
            rows["ground truth"].append(tracking_metrics(gt_frames, track(ground_truth_people(gt_frames), plain, fps)))
            if predictor is None:
                continue
            files = [folder / name for name in info["files"]]
            still = list(info.get("still_track_ids", []))
            people = predicted_people(predictor, files, progress)
            tracked = track(people, plain, fps)
            rows["model"].append(tracking_metrics(gt_frames, tracked))
            jitters.setdefault("none", []).append(still_jitter(gt_frames, tracked, still,
                                                               keypoint_threshold=plain.keypoint_threshold))
            for min_cutoff, beta in pairs:
                smooth = Tracker(COCO_PERSON.sigmas, **base, **{**options, "smooth": True, "min_cutoff": min_cutoff,
                                                                "beta": beta})
                tracked = track(people, smooth, fps)
                jitters.setdefault(f"{min_cutoff:g}, {beta:g}", []).append(
                    {**still_jitter(gt_frames, tracked, still, keypoint_threshold=plain.keypoint_threshold),
                     "error": tracking_metrics(gt_frames, tracked)})
            if n == 0 and rounds:
                result["speed"] = loop_speed(predictor, folder / "frames", rounds)
    result["video"]["persons"] = sum(r["persons"] for r in rows["ground truth"])
    result["video"]["tracks"] = sum(r["gt_tracks"] for r in rows["ground truth"])
    for key, values in rows.items():
        if values:
            result["rows"][key] = _combine(values)
    if jitters:
        result["jitter"] = {}
        for key, values in jitters.items():
            errors = [v["error"] for v in values] if "error" in values[0] else rows["model"]
            result["jitter"][key] = {**_combine_jitter(values), "error_px": _combine(errors)["error_px"]}
    return result


def _longer_side(path: Path) -> int:
    image = cv2.imread(str(path))
    if image is None:
        raise DataError(f"cannot read the frame {path}")
    return int(max(image.shape[:2]))


def format_table(result: dict, machine: dict | None = None) -> str:
    """The markdown of ``run``'s result (the docs block ``track``)."""
    v = result["video"]
    o = result["options"]
    seeds = result["seeds"]
    lines = [f"{len(seeds)} synthetic video(s) (seeds {', '.join(map(str, seeds))}) of {v['frames']} frames at "
             f"{v['fps']:g} fps: {v['persons']} ground-truth persons of {v['tracks']} tracks ({v['still']} still "
             f"person(s) per video); tracker: OKS {o.get('oks_threshold')}, IoU {o.get('iou_threshold')} below "
             f"{o.get('min_keypoints')} keypoints, max_missed {o.get('max_missed')}, motion "
             f"{'on' if o.get('motion', True) else 'off'}; a match to the ground truth at OKS {MATCH_OKS}.", "",
             "| input | found | ID switches | right id | ids given (ground-truth tracks) | keypoint error (px) |",
             "|---|---:|---:|---:|---:|---:|"]
    names = {"ground truth": "ground-truth poses (the tracker's ceiling)", "model": "the model's people"}
    for key, row in result["rows"].items():
        error = f"{row['error_px']:.2f}" if row["error_px"] is not None else "-"
        lines.append(f"| {names[key]} | {row['found_fraction']:.1%} | {row['id_switches']} | "
                     f"{row['right_fraction']:.1%} | {row['ids']} ({row['gt_tracks']}) | {error} |")
    if "jitter" in result:
        lines += ["", "Keypoint jitter of the still person (px a keypoint moves from one frame to the next where it "
                  "is visible, mean and median) and keypoint error of every matched person (px), by smoothing:", "",
                  "| One-Euro (min_cutoff Hz, beta) | jitter, mean (px) | jitter, median (px) | keypoint moves "
                  "| keypoint error (px) |", "|---|---:|---:|---:|---:|"]
        config = next((k for k in result["jitter"] if k != "none"), None)
        for name, row in result["jitter"].items():
            jitter = f"{row['jitter_px']:.3f} | {row['median_px']:.3f}" if row["jitter_px"] is not None else "- | -"
            error = f"{row['error_px']:.2f}" if row["error_px"] is not None else "-"
            label = name + (" (the config's)" if name == config else "")
            lines.append(f"| {label} | {jitter} | {row['keypoint_moves']} | {error} |")
    if "speed" in result:
        s = result["speed"]
        lines += ["", "The video loop over the first video, writing the mp4 and the JSON lines (medians of "
                  f"{len(s['serial']['samples'])} interleaved rounds):", "",
                  "| loop | frames/s | ms per frame | network + decoding ms per frame |", "|---|---:|---:|---:|"]
        names = {"serial": "serial (`--serial`)", "pipelined": "pipelined (the default)",
                 "decoding apart": "pipelined, decoding in the writing thread (a GPU's way)"}
        for mode, name in names.items():
            if mode not in s:
                continue
            row = s[mode]
            lines.append(f"| {name} | {row['fps']:.2f} | {1000 / row['fps']:.0f} | "
                         f"{row['network_ms']:.0f} + {row['decode_ms']:.0f} |")
    if "predictor" in result:
        lines += ["", f"Model: `{result['checkpoint']}`, {result['predictor']}."]
    if machine:
        lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + "."]
    return "\n".join(lines) + "\n"


__all__ = ["format_table", "ground_truth_people", "loop_speed", "make_video", "match", "predicted_people", "run",
           "still_jitter", "track", "tracking_metrics"]
