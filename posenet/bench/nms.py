"""The NMS benchmark behind ``scripts/benchmark.py nms``: posenet's compiled NMS against
torchvision.ops.nms and posenet's pure-torch fallback on generated boxes (protocol: see
``posenet.bench.common``)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from posenet import ops
from posenet.bench.common import Timing, time_call

if TYPE_CHECKING:
    import torch

# --------------------------------------------------------------------------- NMS

NMS_DISTRIBUTIONS = {
    "clustered": (
        "n/50 objects with centres uniform on a 1333x800 image and sides log-uniform in "
        "[32, 256] px; each box is one object's box with every corner jittered by N(0, 0.1 * "
        "side) (detector-like: most boxes are suppressed)"
    ),
    "scattered": (
        "centres uniform on a square of side 32*sqrt(n) px, sides uniform in [8, 40] px "
        "(little overlap: most boxes are kept, the worst case for greedy NMS)"
    ),
}


def nms_boxes(
    distribution: str, n: int, *, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple:
    """``(boxes, scores)``: ``n`` float32 boxes of ``distribution`` (see NMS_DISTRIBUTIONS)
    with scores uniform in [0, 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if distribution == "clustered":
        k = max(1, n // 50)
        centre = torch.rand(k, 2, generator=g) * torch.tensor([1333.0, 800.0])
        side = torch.exp(torch.empty(k, 2).uniform_(math.log(32), math.log(256), generator=g))
        obj = torch.randint(0, k, (n,), generator=g)
        boxes = torch.cat([centre[obj] - side[obj] / 2, centre[obj] + side[obj] / 2], 1)
        boxes = boxes + torch.randn(n, 4, generator=g) * 0.1 * side[obj].repeat(1, 2)
    elif distribution == "scattered":
        centre = torch.rand(n, 2, generator=g) * 32 * math.sqrt(n)
        side = 8 + 32 * torch.rand(n, 2, generator=g)
        boxes = torch.cat([centre - side / 2, centre + side / 2], 1)
    else:
        raise ValueError(
            f"unknown box distribution {distribution!r}; choose from {', '.join(NMS_DISTRIBUTIONS)}"
        )
    scores = torch.rand(n, generator=g)
    return boxes.to(device), scores.to(device)


def benchmark_nms(
    sizes: Sequence[int] = (1000, 10000),
    distributions: Sequence[str] = ("clustered", "scattered"),
    *,
    iou_threshold: float = 0.5,
    device: torch.device | str = "cpu",
    fallback: bool = True,
    seed: int = 0,
    **timing,
) -> List[Dict[str, object]]:
    """Times posenet's compiled NMS, torchvision.ops.nms and posenet's pure-torch fallback
    (all through their public functions) and checks that they keep the same boxes."""
    import torch
    import torchvision

    if not ops.has_compiled_nms():
        raise RuntimeError("posenet._C is not built: run `pip install --no-build-isolation -e .`")
    device = torch.device(device)
    rows = []
    previous = ops.set_nms_backend("compiled")
    try:
        for n in sizes:
            for dist in distributions:
                boxes, scores = nms_boxes(dist, n, seed=seed, device=device)
                ops.set_nms_backend("compiled")
                ours = ops.nms(boxes, scores, iou_threshold)
                t_ours = time_call(lambda: ops.nms(boxes, scores, iou_threshold), device=device, **timing)
                ref = torchvision.ops.nms(boxes, scores, iou_threshold)
                t_tv = time_call(
                    lambda: torchvision.ops.nms(boxes, scores, iou_threshold), device=device, **timing
                )
                same = torch.equal(ours, ref)
                t_fb = None
                if fallback:
                    ops.set_nms_backend("torch")
                    same = same and torch.equal(ops.nms(boxes, scores, iou_threshold), ref)
                    t_fb = time_call(lambda: ops.nms(boxes, scores, iou_threshold), device=device, **timing)
                rows.append(
                    {
                        "n": n,
                        "distribution": dist,
                        "kept": int(ref.numel()),
                        "posenet": t_ours,
                        "torchvision": t_tv,
                        "fallback": t_fb,
                        "identical": same,
                    }
                )
    finally:
        ops.set_nms_backend(previous)
    return rows


def nms_protocol(
    *, iou_threshold: float, device: str, warmup: int, repeats: int, min_repeats: int, budget_s: float
) -> str:
    import torch

    return (
        f"Protocol: torchvision.ops.nms vs posenet.ops.nms (compiled, and forced to the "
        f"pure-torch fallback), float32 boxes on {device}, IoU threshold {iou_threshold}; each "
        f"cell is the median wall time of {min_repeats} to {repeats} timed calls (fewer once "
        f"a cell has used {budget_s:g} s) after {warmup} warm-up calls; "
        f"torch.set_num_threads({torch.get_num_threads()}). "
        f"'identical': all three returned the same kept indices."
    )


def _ms(t: Optional[Timing]) -> str:
    if t is None:
        return "-"
    ms = t.median_s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def format_nms_table(rows: List[Dict[str, object]], info: Dict[str, str], protocol: str,
                     title: str = "NMS benchmark") -> str:
    """Markdown: the machine, the protocol, one row per (size, distribution), and how the
    boxes were drawn."""
    lines = [
        f"### {title}",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        protocol,
        "",
        "| boxes | distribution | kept | posenet compiled (ms) | torchvision (ms) | pure-torch fallback (ms) "
        "| torchvision / posenet | identical |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = r["torchvision"].median_s / r["posenet"].median_s
        lines.append(
            f"| {r['n']} | {r['distribution']} | {r['kept']} | {_ms(r['posenet'])} | "
            f"{_ms(r['torchvision'])} | {_ms(r['fallback'])} | {ratio:.1f}x | "
            f"{'yes' if r['identical'] else 'NO'} |"
        )
    lines += ["", "Distributions:"]
    used = dict.fromkeys(r["distribution"] for r in rows)
    lines += [f"- {name}: {NMS_DISTRIBUTIONS[name]}." for name in used]
    return "\n".join(lines) + "\n"
