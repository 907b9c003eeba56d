"""The network benchmark (``scripts/benchmark.py network``): what each CPU inference option
does to MultiPoseNet's network time, beside decoding, end to end, and against the original
port's design.

Rows, each on the same random weights and the same random 480×480 image (batch 1), timed as
the median wall time of ``forward`` + the detection post-processing (``PoseNet.detect``:
scores, top-k, box decoding, NMS), with the largest absolute difference of the keypoint
heatmaps from the plain eager fp32 row:

* eager fp32: the model as trained, NCHW contiguous input, the port's way of running it;
* BN folded (``posenet.models.fuse.fold_batchnorm``), channels_last input, both;
* bf16 autocast over BN folded + channels_last (a short run; on a CPU without AVX512-BF16/AMX
  it runs on slow reference kernels, and the table says so);
* ``torch.compile`` of BN folded + channels_last (its compile time is stated; ``skip``-able);
* onnxruntime (CPU) on ``posenet.deploy.export.export_onnx``'s graph;
* onnxruntime on the int8 graph of ``posenet.deploy.quantize.quantize_graph`` (what
  ``export_onnx.py --int8`` writes: QDQ, int8 per-channel weights, uint8 activations, the
  output layers in float32), calibrated on a few random images. With random weights its
  heatmap difference says nothing about accuracy: the int8 exports' AP is measured on trained
  models (docs/deployment.md).

The fp32 rows are timed in interleaved rounds (``interleaved_timing``), so that a busy machine
slows them alike.

Decoding: ours (``Predictor.peaks`` + the PRN grouping: all boxes in one batch, the first layer
from the peak cells) on the crowded scene of ``posenet.bench.decode.crowd_scene``; and the
port's decoding as the port was designed (``port_prn_decoding``): the same peaks, then the PRN
box by box on its dense input grid, each keypoint type of each box taking its best peak in
Python loops. The port's network is the port-equal configuration (``configs/port_equal_r50.yaml``:
the port's trunk, FPN, subnet and head widths, its input) run eagerly in fp32: the same layers
and FLOPs as the port's network, which a side-by-side run found within 4% of ours.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from posenet.bench.common import Timing, machine_info, time_call
from posenet.bench.decode import crowd_network_output
from posenet.codecs.prn_grid import blur, box_grid, image_to_grid
from posenet.config import build
from posenet.deploy.export import export_onnx
from posenet.deploy.quantize import quantize_graph
from posenet.engine.precision import native_bf16
from posenet.inference.predictor import Predictor
from posenet.models.fuse import BATCH_NORMS, fold_batchnorm

VARIANTS = ("eager", "folded", "channels_last", "folded+channels_last", "bf16", "compile", "onnxruntime",
            "onnxruntime-int8")
LABELS = {
    "eager": "eager fp32 (the port's way)",
    "folded": "BN folded",
    "channels_last": "channels_last",
    "folded+channels_last": "BN folded + channels_last",
    "bf16": "bf16 autocast",
    "compile": "torch.compile",
    "onnxruntime": "onnxruntime",
    "onnxruntime-int8": "onnxruntime int8",
}
# images the int8 row's activations are calibrated on (random, like the weights)
CALIBRATION_IMAGES = 8
# fp32 rows whose heatmaps differ from eager fp32 by less than this (relative to the largest
# heatmap value) count as equal outputs
EQUAL_RTOL = 1e-4


@dataclass
class NetworkRow:
    name: str
    timing: Timing | None = None
    max_abs_diff: float = float("nan")
    notes: list[str] = field(default_factory=list)
    fp32: bool = True


def random_model(cfg: DictConfig):
    """The config's MultiPoseNet (keypoint + detection + PRN) with seeded random weights, in eval
    mode, its frozen batch norms given random statistics (a fresh frozen batch norm is the
    identity, and folding it would save work a trained one costs)."""
    torch.manual_seed(0)
    model = build.posenet_model(OmegaConf.merge(cfg, {"model": {"pretrained": "none"}}),
                                len(cfg.data.keypoints.names), detection=True, prn=True).eval()

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BATCH_NORMS):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
    return model


def network_call(model, batch: torch.Tensor, detect_options: dict, amp: bool = False) -> Callable[[], torch.Tensor]:
    """forward + detection post-processing of ``batch`` (1, 3, H, W) uint8; returns the heatmaps."""
    hw = tuple(batch.shape[-2:])

    @torch.no_grad()
    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(batch)
        model.detect(out, [hw], **detect_options)
        return out["heatmaps"].float()

    return call


def _variant(model, name: str):
    """(model, input memory format) of an fp32 variant. channels_last is the input's: a
    convolution whose input is channels_last runs in it (oneDNN's NHWC kernels) and returns
    channels_last, so the whole network follows without converting the weights (what the
    Predictor does, whose model may share its weights with a training model)."""
    m = fold_batchnorm(model) if name.startswith("folded") else model
    return m, torch.channels_last if name.endswith("channels_last") else torch.contiguous_format


def interleaved_timing(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                       budget_s: float = 600.0) -> dict[str, Timing]:
    """Median wall time of each call, timed in rounds of one call each so that a change of the
    machine's load during the run falls on every row alike; stops after ``budget_s`` seconds
    once 3 rounds are done."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    spent = 0.0
    for r in range(repeats):
        if r >= 3 and spent > budget_s:
            break
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
            spent += samples[name][-1]
    return {name: Timing(statistics.median(s), len(s), s) for name, s in samples.items()}


# the variant that bf16 autocast and torch.compile are applied to
BASE = "folded+channels_last"


def benchmark_network(cfg: DictConfig, input_size: int = 480, threads: int = 2, people: int = 20,
                      skip: Sequence[str] = (), repeats: int = 10, bf16_repeats: int = 2,
                      log: Callable[[str], None] = print) -> dict:
    """The table's measurements (see the module docstring); ``skip``: names of ``VARIANTS``
    and "port" (the port's decoding)."""
    unknown = sorted(set(skip) - set(VARIANTS) - {"port"})
    if unknown:
        raise ValueError(f"unknown variants to skip: {', '.join(unknown)}; choose from {', '.join(VARIANTS)}, port")
    torch.set_num_threads(threads)
    cfg = OmegaConf.merge(cfg, {"infer": {"input_size": input_size}})
    model = random_model(cfg)
    detect_options = build.detection_options(cfg)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 3, input_size, input_size), dtype=np.uint8))

    calls, rows = {}, {}
    for name in ("eager", "folded", "channels_last", "folded+channels_last"):
        if name == "eager" or name not in skip:
            m, fmt = _variant(model, name)
            calls[name] = network_call(m, image.contiguous(memory_format=fmt), detect_options)
            rows[name] = NetworkRow(name)
    base_model, base_fmt = _variant(model, BASE)
    base_input = image.contiguous(memory_format=base_fmt)
    if "compile" not in skip:
        log("network: torch.compile (compiling) ...")
        calls["compile"] = network_call(torch.compile(base_model), base_input, detect_options)
        start = time.perf_counter()
        calls["compile"]()
        rows["compile"] = NetworkRow("compile", notes=[f"of {LABELS[BASE]}",
                                                       f"first call (compiling) {time.perf_counter() - start:.0f} s"])
    for name in ("onnxruntime", "onnxruntime-int8"):
        if name not in skip:
            calls[name], notes = _onnxruntime_call(fold_batchnorm(model), image, detect_options, log,
                                                   int8=name.endswith("int8"))
            rows[name] = NetworkRow(name, notes=notes, fp32=not name.endswith("int8"))
    reference = calls["eager"]()
    for name, call in calls.items():
        rows[name].max_abs_diff = float((call() - reference).abs().max())
    log(f"network: timing {', '.join(LABELS[n] for n in calls)} in rounds ...")
    for name, timing in interleaved_timing(calls, repeats).items():
        rows[name].timing = timing
    if "bf16" not in skip:
        log("network: bf16 autocast (short run) ...")
        call = network_call(base_model, base_input, detect_options, amp=True)
        heat = call()
        row = NetworkRow("bf16", time_call(call, warmup=0, repeats=bf16_repeats, min_repeats=1, budget_s=0),
                         float((heat - reference).abs().max()), [f"over {LABELS[BASE]}"], fp32=False)
        row.notes.append("native bf16" if native_bf16("cpu") else
                         "not native on this CPU (no AVX512-BF16/AMX): reference kernels")
        rows["bf16"] = row
    scale = float(reference.abs().max())

    predictor = Predictor.from_config(cfg, model)
    log("decoding: ours and the port's ...")
    net = crowd_network_output(predictor, people, input_size)

    def ours():
        xy, types, scores = predictor.peaks(net)
        return predictor.group(xy, types, scores, net.boxes, net.box_scores, net.matrix, net.image_size)

    decoding = {"ours": time_call(ours, warmup=2, repeats=repeats * 3, budget_s=10)}
    if "port" not in skip:
        def port():
            xy, types, scores = predictor.peaks(net)
            return port_prn_decoding(model.prn, net.boxes.numpy(), xy.numpy(), types.numpy(), scores.numpy(),
                                     margin=cfg.prn.box_margin, input_sigma=cfg.prn.input_sigma,
                                     window=cfg.prn.window)

        decoding["port"] = time_call(port, warmup=1, repeats=repeats, budget_s=30)
    return {"rows": rows, "decoding": decoding, "scale": scale, "input_size": input_size,
            "threads": threads, "people": people, "peaks": int(predictor.peaks(net)[0].shape[0]),
            "model": f"ResNet-{cfg.model.backbone_depth}, keypoint FPN {cfg.model.fpn_channels}, subnet "
                     f"{cfg.model.subnet_channels}/{cfg.model.fuse_channels}, detection FPN "
                     f"{cfg.detection.fpn_channels} with {cfg.detection.head_convs}-conv heads, PRN hidden "
                     f"{cfg.prn.hidden}",
            "config": cfg.name}


def _onnxruntime_call(model, image, detect_options, log, int8: bool = False):
    """(call, notes) of onnxruntime (CPU) on ``posenet.deploy.export.export_onnx``'s graph of
    ``model`` (with ``int8``, its int8 graph calibrated on ``CALIBRATION_IMAGES`` random images):
    the graph's raw per-level maps flattened and post-processed by the same ``PoseNet.detect``,
    so the row times what the others time."""
    import tempfile

    import onnxruntime as ort

    log(f"network: onnxruntime{' int8' if int8 else ''} (exporting) ...")
    head = model.detection_head
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/model.onnx"
        start = time.perf_counter()
        names = export_onnx(model, path, family="multiposenet", input_size=int(image.shape[-1]))
        notes = ["CPUExecutionProvider", "graph of the BN-folded model", f"export {time.perf_counter() - start:.0f} s"]
        if int8:
            rng = np.random.default_rng(1)
            feeds = [{"image": rng.integers(0, 255, tuple(image.shape), dtype=np.uint8).astype(np.float32)}
                     for _ in range(CALIBRATION_IMAGES)]
            start = time.perf_counter()
            quantize_graph(path, f"{tmp}/model.int8.onnx", feeds)
            path = f"{tmp}/model.int8.onnx"
            notes += [f"int8 (QDQ; output layers float32), calibrated on {CALIBRATION_IMAGES} random images in "
                      f"{time.perf_counter() - start:.0f} s; random weights: the difference says nothing of accuracy"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image.float().numpy()}
    hw = tuple(image.shape[-2:])
    levels = (len(names) - 1) // 2

    @torch.no_grad()
    def call():
        outputs = [torch.from_numpy(o) for o in session.run(names, feed)]
        cls_maps, box_maps = outputs[1:1 + levels], outputs[1 + levels:]
        sizes = [tuple(m.shape[-2:]) for m in cls_maps]
        raw = {"cls_logits": torch.cat([head._flatten(m, head.num_classes) for m in cls_maps], dim=1),
               "box_deltas": torch.cat([head._flatten(m, 4) for m in box_maps], dim=1),
               "anchors": head.anchor_generator(sizes, outputs[0].device), "feature_sizes": sizes}
        model.detect({"detection": raw}, [hw], **detect_options)
        return outputs[0]

    return call, notes


@torch.no_grad()
def port_prn_decoding(prn, boxes, peaks_xy, peaks_type, peaks_score, margin: float = 0.21,
                      input_sigma: float = 1.0, window: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """A reference of the original port's PRN decoding, for timing it (not a product path):
    box by box, the box's PRN input grid (1 at each peak cell of its type inside the enlarged
    box, blurred), the PRN on the dense grid (its full first layer), then for each keypoint type
    the peak inside the box whose output summed over the ``window`` × ``window`` cells around
    it is largest — each box on its own, in Python loops over boxes, types and peaks, as the port
    did. Returns keypoints (B, K, 2) and scores (B, K) (the chosen peak's score, 0 where none)."""

    K, H, W = prn.grid_shape
    was_training = prn.training
    prn.eval()
    keypoints = np.zeros((len(boxes), K, 2))
    result = np.zeros((len(boxes), K))
    r = window // 2
    try:
        for b, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
            _, affine = box_grid(box[None], margin, H, W)
            cells = np.floor(image_to_grid(affine, peaks_xy)[0]).astype(np.int64)  # (P, 2) column, row
            grid = np.zeros((K, H, W), np.float32)
            members = [[] for _ in range(K)]
            for p, ((u, v), k) in enumerate(zip(cells, peaks_type)):
                if 0 <= u < W and 0 <= v < H:
                    grid[k, v, u] = 1.0
                    members[k].append(p)
            grid = blur(grid, input_sigma)
            out = prn(torch.from_numpy(grid)[None])[0].numpy()
            for k in range(K):
                best, best_score = -1, 0.0
                for p in members[k]:
                    u, v = cells[p]
                    s = out[k, max(v - r, 0):v + r + 1, max(u - r, 0):u + r + 1].sum()
                    if s > best_score:
                        best, best_score = p, s
                if best >= 0:
                    keypoints[b, k] = peaks_xy[best]
                    result[b, k] = peaks_score[best]
    finally:
        prn.train(was_training)
    return keypoints, result


def format_network_table(result: dict, command: str, load_note: str = "") -> str:
    info = machine_info("cpu")
    machine = "; ".join(f"{k} {v}" for k, v in info.items())
    rows, decoding, scale = result["rows"], result["decoding"], result["scale"]
    ours_decode = 1e3 * decoding["ours"].median_s
    n, size = result["people"], result["input_size"]
    lines = [
        "### The network on the CPU, and end to end against the original port",
        "",
        f"Machine: {machine}.{(' ' + load_note) if load_note else ''}",
        "",
        f"Command: `{command}`. Model: {result['model']} (config `{result['config']}`), seeded random weights, "
        f"{result['threads']} torch threads. Network: median wall time of forward + detection post-processing "
        f"(scores, top-k, box decoding, NMS) on one random {size}×{size} image, batch 1; max |Δ| is the largest "
        f"absolute difference of the keypoint heatmaps from eager fp32 (largest heatmap value {scale:.3g}). "
        f"Decoding: peaks + grouping + mapping back on the encoded heatmaps of a crowded scene of {n} overlapping "
        f"people with their {n} boxes ({result['peaks']} peaks). End to end = network + our decoding. The port's "
        "side is reconstructed from its published design: its network is this configuration (the port's trunk, "
        "FPN, subnet and head widths and input) run eagerly in fp32, and its decoding is `port_prn_decoding`: "
        "the same peaks, then the PRN box by box on its dense input grid, each box choosing its peaks in "
        "Python loops, as the port did.",
        "",
        "| network | median ms | min ms | max \\|Δ\\| heatmaps | end to end ms | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, row in rows.items():
        ms = 1e3 * row.timing.median_s
        notes = [f"{row.timing.runs} runs", *row.notes]
        if row.fp32 and row.max_abs_diff <= EQUAL_RTOL * scale:
            notes.append("equal outputs")
        lines.append(f"| {LABELS[name]} | {ms:.0f} | {1e3 * min(row.timing.samples):.0f} | {row.max_abs_diff:.1e} | "
                     f"{ms + ours_decode:.0f} | "
                     f"{'; '.join(notes)} |")
    lines += ["", "| decoding | ms | notes |", "|---|---:|---|",
              f"| ours: peaks + PRN (all boxes in one batch, first layer from the peak cells) | {ours_decode:.1f} | "
              f"{decoding['ours'].runs} runs |"]
    if "port" in decoding:
        lines.append(f"| the port's: the same peaks + PRN box by box, dense input layer (`port_prn_decoding`) | "
                     f"{1e3 * decoding['port'].median_s:.1f} | {decoding['port'].runs} runs |")
    best = fastest_equal(result)
    if "port" in decoding and "eager" in rows:
        port_total = 1e3 * (rows["eager"].timing.median_s + decoding["port"].median_s)
        ours_total = 1e3 * rows[best].timing.median_s + ours_decode
        lines += ["", f"End to end: the port's design {port_total:.0f} ms (eager fp32 network + its decoding), ours "
                      f"{ours_total:.0f} ms ({LABELS[best]} + our decoding): **{port_total / ours_total:.2f}×** "
                      "faster at equal backbone, heads and input."]
        if BASE in rows and best != BASE:
            default_total = 1e3 * rows[BASE].timing.median_s + ours_decode
            lines[-1] += (f" With the PyTorch predictors' default ({LABELS[BASE]}): {default_total:.0f} ms, "
                          f"**{port_total / default_total:.2f}×**.")
        if "onnxruntime-int8" in rows:
            int8_total = 1e3 * rows["onnxruntime-int8"].timing.median_s + ours_decode
            lines[-1] += (f" With the int8 network (onnxruntime int8, `export_onnx.py --int8`; AP beside float32 in "
                          f"docs/deployment.md): {int8_total:.0f} ms, **{port_total / int8_total:.2f}×**.")
    return "\n".join(lines) + "\n"


def fastest_equal(result: dict) -> str:
    """The fastest row whose heatmaps equal eager fp32's (``EQUAL_RTOL``)."""
    scale = result["scale"]
    equal = [r for r in result["rows"].values() if r.fp32 and r.max_abs_diff <= EQUAL_RTOL * scale]
    return min(equal, key=lambda r: r.timing.median_s).name


__all__ = ["VARIANTS", "benchmark_network", "fastest_equal", "format_network_table", "network_call",
           "port_prn_decoding", "random_model"]
