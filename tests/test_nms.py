"""posenet.ops.nms / batched_nms: identical to torchvision, on both backends.

Every comparison is exact (torch.equal on the kept indices, order included) unless a comment
says why it cannot be: torchvision sorts scores with a stable sort, so tied scores have one
defined order, and the IoU arithmetic is reproduced operation for operation.
"""
import importlib
import sys
import warnings

import pytest
import torch
import torchvision

import posenet.ops as ops

nms_module = importlib.import_module("posenet.ops.nms")

THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small tensors: one intra-op thread is faster and immune to oversubscribed CI machines.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=["compiled", "torch"])
def backend(request):
    if request.param == "compiled" and not ops.has_compiled_nms():
        pytest.skip("posenet._C is not built (test_compiled_extension_loads reports it)")
    previous = ops.set_nms_backend(request.param)
    yield request.param
    ops.set_nms_backend(previous)


# --------------------------------------------------------------------------- helpers


def make_case(g, n, kind):
    """Boxes and scores of one kind: uniform, integer (coordinates), clustered, tied
    (scores on 4 levels), degenerate (zero-area, inverted and duplicated boxes)."""
    if kind == "clustered":
        k = max(1, n // 20)
        centres = torch.rand(k, 2, generator=g) * 400
        size = 20 + torch.rand(k, 2, generator=g) * 80
        a = torch.randint(0, k, (n,), generator=g)
        jitter = torch.randn(n, 4, generator=g) * 0.1 * size[a].repeat(1, 2)
        boxes = torch.cat([centres[a] - size[a] / 2, centres[a] + size[a] / 2], 1) + jitter
    else:
        xy = torch.rand(n, 2, generator=g) * 200
        wh = torch.rand(n, 2, generator=g) * 60
        boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=g)
    if kind == "integer":
        boxes = boxes.round()
    if kind == "tied":
        scores = (scores * 4).floor() / 4
    if kind == "degenerate" and n > 0:
        pick = torch.rand(n, generator=g)
        boxes[pick < 0.2, 2] = boxes[pick < 0.2, 0]  # zero width
        boxes[(pick >= 0.2) & (pick < 0.3), 3] = boxes[(pick >= 0.2) & (pick < 0.3), 1]
        inv = (pick >= 0.3) & (pick < 0.4)
        boxes[inv] = boxes[inv][:, [2, 3, 0, 1]]  # x2 < x1, y2 < y1
        dup = (pick >= 0.4) & (pick < 0.6)
        boxes[dup] = boxes[torch.randint(0, n, (int(dup.sum()),), generator=g)]
        scores = (scores * 8).floor() / 8
    return boxes, scores


def batched_reference(boxes, scores, idxs, thr):
    """Per-class torchvision.ops.nms, merged by decreasing score (ties by index, as the
    stable sort orders them). Exact for any input, unlike torchvision's batched_nms whose
    coordinate offsets may round."""
    kept = [torch.empty(0, dtype=torch.int64)]
    for k in torch.unique(idxs):
        members = torch.where(idxs == k)[0]
        kept.append(members[torchvision.ops.nms(boxes[members], scores[members], thr)])
    kept = torch.cat(kept).sort().values
    return kept[torch.sort(scores[kept], descending=True, stable=True)[1]]


def random_cases(seed, count):
    g = torch.Generator().manual_seed(seed)
    kinds = ("uniform", "integer", "clustered", "tied", "degenerate")
    for case in range(count):
        n = int(torch.randint(1000, 3000, (1,), generator=g)) if case % 60 == 0 else int(
            torch.randint(0, 300, (1,), generator=g)
        )
        thr = THRESHOLDS[case % len(THRESHOLDS)] if case % 2 else float(torch.rand(1, generator=g))
        kind = kinds[case % len(kinds)]
        boxes, scores = make_case(g, n, kind)
        classes = int(torch.randint(1, 6, (1,), generator=g))
        idxs = torch.randint(0, classes, (n,), generator=g)
        yield case, kind, boxes, scores, idxs, thr


def assert_descending(scores, keep):
    s = scores[keep]
    assert bool((s[:-1] >= s[1:]).all()), "kept indices are not in decreasing score order"


# --------------------------------------------------------------------------- equality


def test_compiled_extension_loads():
    assert ops.has_compiled_nms(), (
        "posenet._C did not load; build it with `pip install --no-build-isolation -e .`"
    )


def test_nms_matches_torchvision_on_random_cases(backend):
    failures = []
    for case, kind, boxes, scores, _, thr in random_cases(seed=0, count=1200):
        expected = torchvision.ops.nms(boxes, scores, thr)
        got = ops.nms(boxes, scores, thr)
        if not torch.equal(got, expected):
            failures.append((case, kind, len(boxes), thr))
    assert not failures, f"{len(failures)} mismatches (case, kind, n, thr): {failures[:10]}"


def test_batched_nms_matches_per_class_nms_on_random_cases(backend):
    failures = []
    for case, kind, boxes, scores, idxs, thr in random_cases(seed=1, count=600):
        got = ops.batched_nms(boxes, scores, idxs, thr)
        if not torch.equal(got, batched_reference(boxes, scores, idxs, thr)):
            failures.append((case, kind, len(boxes), thr))
    assert not failures, f"{len(failures)} mismatches (case, kind, n, thr): {failures[:10]}"


def test_batched_nms_matches_torchvision_batched_nms(backend):
    g = torch.Generator().manual_seed(2)
    for case in range(200):
        # torchvision offsets each class by max_coordinate + 1 below 1000 boxes. With integer
        # coordinates the offset boxes are exact, so the result must be identical, ties too.
        n = int(torch.randint(0, 1000, (1,), generator=g))
        boxes, scores = make_case(g, n, ("integer", "tied", "clustered")[case % 3])
        boxes = boxes.round().clamp(0, 511)
        idxs = torch.randint(0, 8, (n,), generator=g)
        thr = float(torch.rand(1, generator=g))
        assert torch.equal(
            ops.batched_nms(boxes, scores, idxs, thr),
            torchvision.ops.batched_nms(boxes, scores, idxs, thr),
        ), (case, n, thr)
    for case in range(6):
        # Above 1000 boxes torchvision runs nms per class and re-sorts the kept scores with an
        # unstable sort: identical for distinct scores, the same set in score order for ties.
        n = 1500 + 500 * case
        boxes, scores = make_case(g, n, "tied" if case % 2 else "clustered")
        idxs = torch.randint(0, 4, (n,), generator=g)
        got = ops.batched_nms(boxes, scores, idxs, 0.5)
        expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
        if case % 2:
            assert set(got.tolist()) == set(expected.tolist())
            assert_descending(scores, got)
        else:
            assert torch.equal(got, expected)


@pytest.mark.parametrize("n", [2000, 6000])
def test_clustered_and_scattered_large(backend, n):
    g = torch.Generator().manual_seed(n)
    clustered, scores = make_case(g, n, "clustered")
    xy = torch.rand(n, 2, generator=g) * 40 * n**0.5
    scattered = torch.cat([xy, xy + 8 + 32 * torch.rand(n, 2, generator=g)], 1)
    for boxes in (clustered, scattered):
        for thr in (0.3, 0.5, 0.7):
            assert torch.equal(ops.nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


def test_tied_scores_keep_the_lowest_index(backend):
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    boxes = box.repeat(5, 1)
    scores = torch.ones(5)
    assert ops.nms(boxes, scores, 0.5).tolist() == [0]
    # -0.0 and +0.0 are tied too (a bitwise sort would put +0.0 first).
    assert ops.nms(boxes[:2], torch.tensor([-0.0, 0.0]), 0.5).tolist() == [0]
    assert torchvision.ops.nms(boxes[:2], torch.tensor([-0.0, 0.0]), 0.5).tolist() == [0]
    # All scores equal, many boxes: the order is the index order, as torchvision's.
    g = torch.Generator().manual_seed(3)
    boxes, _ = make_case(g, 700, "clustered")
    flat = torch.full((700,), 0.25)
    assert torch.equal(ops.nms(boxes, flat, 0.5), torchvision.ops.nms(boxes, flat, 0.5))
    idxs = torch.randint(0, 3, (700,), generator=g)
    assert torch.equal(
        ops.batched_nms(boxes, flat, idxs, 0.5), batched_reference(boxes, flat, idxs, 0.5)
    )


def test_zero_area_and_inverted_boxes(backend):
    boxes = torch.tensor(
        [
            [5.0, 5.0, 5.0, 20.0],  # zero width
            [5.0, 5.0, 5.0, 20.0],  # identical: IoU is 0/0 = NaN, which suppresses nothing
            [0.0, 0.0, 10.0, 10.0],
            [10.0, 10.0, 0.0, 0.0],  # inverted: negative area
            [0.0, 0.0, 10.0, 10.0],
            [3.0, 3.0, 3.0, 3.0],  # a point
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    for thr in (0.0, 0.5, 0.99):
        assert torch.equal(ops.nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


def test_extreme_thresholds(backend):
    g = torch.Generator().manual_seed(4)
    for kind in ("uniform", "degenerate", "clustered"):
        boxes, scores = make_case(g, 300, kind)
        for thr in (-0.5, -1e-9, 0.0, 1e-9, 0.999999, 1.0, 1.5):
            assert torch.equal(
                ops.nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr)
            ), (kind, thr)


@pytest.mark.parametrize(
    "thr, corner, expected",
    [
        (0.1, (0.909672737121582, 0.1099296435713768), [0]),  # float32(0.1) > 0.1
        (0.7, (0.8780074119567871, 0.7972597479820251), [0, 1]),  # float32(0.7) < 0.7
    ],
)
def test_threshold_compared_in_double(thr, corner, expected):
    # The IoU of these two boxes is exactly float32(thr). torchvision compares the float IoU
    # promoted to double with the double threshold, so it suppresses when float32(thr) > thr;
    # comparing in float32 against float32(thr) would not.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, *corner]])
    inter = boxes[1, 2] * boxes[1, 3]
    assert inter / ((1.0 + inter) - inter) == torch.tensor(thr, dtype=torch.float32)
    scores = torch.tensor([1.0, 0.5])
    assert torchvision.ops.nms(boxes, scores, thr).tolist() == expected
    for backend in ("compiled", "torch"):
        ops.set_nms_backend(backend)
        try:
            assert ops.nms(boxes, scores, thr).tolist() == expected
        finally:
            ops.set_nms_backend(None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(backend, dtype):
    g = torch.Generator().manual_seed(5)
    for case in range(40):
        n = int(torch.randint(1, 400, (1,), generator=g))
        boxes, scores = make_case(g, n, ("uniform", "clustered", "tied", "degenerate")[case % 4])
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        thr = THRESHOLDS[case % len(THRESHOLDS)]
        # torchvision's CPU kernel refuses fp16/bf16; ours computes them in fp32, i.e. gives
        # torchvision's answer on the upcast values.
        ref_b, ref_s = (boxes, scores) if dtype == torch.float64 else (boxes.float(), scores.float())
        expected = torchvision.ops.nms(ref_b, ref_s, thr)
        got = ops.nms(boxes, scores, thr)
        assert got.dtype == torch.int64
        assert torch.equal(got, expected), (case, n, thr)
        idxs = torch.randint(0, 3, (n,), generator=g)
        assert torch.equal(
            ops.batched_nms(boxes, scores, idxs, thr), batched_reference(ref_b, ref_s, idxs, thr)
        )


def test_mixed_dtypes_and_layouts_agree_across_backends():
    g = torch.Generator().manual_seed(6)
    boxes, scores = make_case(g, 500, "tied")
    idxs = torch.randint(-3, 3, (500,), generator=g)
    variants = [
        (boxes, scores.double(), idxs.int()),
        (boxes.half(), scores, idxs.to(torch.int16)),
        (boxes.t().contiguous().t(), scores[::1], idxs),  # column-major boxes
        (torch.stack([boxes, boxes], 2)[:, :, 0], torch.stack([scores, scores], 1)[:, 0], idxs),
    ]
    for b, s, i in variants:
        results = []
        for backend in ("compiled", "torch"):
            ops.set_nms_backend(backend)
            try:
                results.append((ops.nms(b, s, 0.5), ops.batched_nms(b, s, i, 0.5)))
            finally:
                ops.set_nms_backend(None)
        assert torch.equal(results[0][0], results[1][0])
        assert torch.equal(results[0][1], results[1][1])
        assert_descending(s, results[0][0])
    # Strided views give the contiguous answer.
    strided = torch.stack([boxes, boxes], 2)[:, :, 0]
    assert not strided.is_contiguous()
    assert torch.equal(ops.nms(strided, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_class_ids_of_any_integer_type_and_range(backend):
    g = torch.Generator().manual_seed(7)
    boxes, scores = make_case(g, 400, "clustered")
    base = torch.randint(0, 4, (400,), generator=g)
    expected = batched_reference(boxes, scores, base, 0.5)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        assert torch.equal(ops.batched_nms(boxes, scores, base.to(dtype), 0.5), expected)
    # Huge and negative ids (no dense id range): same grouping.
    sparse = torch.tensor([-(2**40), 7, 2**50, -1])[base]
    assert torch.equal(ops.batched_nms(boxes, scores, sparse, 0.5), expected)
    # One class is plain nms.
    one = torch.zeros(400, dtype=torch.int64)
    assert torch.equal(ops.batched_nms(boxes, scores, one, 0.5), ops.nms(boxes, scores, 0.5))


def test_empty_input(backend):
    for dtype in (torch.float32, torch.float64, torch.float16):
        boxes, scores = torch.empty(0, 4, dtype=dtype), torch.empty(0, dtype=dtype)
        for out in (
            ops.nms(boxes, scores, 0.5),
            ops.batched_nms(boxes, scores, torch.empty(0, dtype=torch.int64), 0.5),
        ):
            assert out.dtype == torch.int64 and out.shape == (0,)


def test_single_box(backend):
    out = ops.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.3]), 0.5)
    assert out.tolist() == [0] and out.dtype == torch.int64


# --------------------------------------------------------------------------- errors

B = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
S = torch.tensor([0.9, 0.8])
I = torch.tensor([0, 1])
NAN_B = B.clone()
NAN_B[1, 2] = float("nan")
INF_S = torch.tensor([0.9, float("inf")])

BAD_INPUTS = [
    ("nms", (B[:, :3], S, 0.5), ValueError, r"boxes must have shape \(N, 4\)"),
    ("nms", (B.flatten(), S, 0.5), ValueError, r"boxes must have shape \(N, 4\)"),
    ("nms", (B, S[None], 0.5), ValueError, r"scores must have shape \(N,\)"),
    ("nms", (B, S[:1], 0.5), ValueError, "same length, got 2 and 1"),
    ("nms", (B.int(), S, 0.5), TypeError, "boxes must be a floating-point tensor"),
    ("nms", (B, (S * 10).long(), 0.5), TypeError, "scores must be a floating-point tensor"),
    ("nms", (B.tolist(), S, 0.5), TypeError, "boxes must be a torch.Tensor"),
    ("nms", (NAN_B, S, 0.5), ValueError, "boxes contain NaN or infinite values"),
    ("nms", (B, INF_S, 0.5), ValueError, "scores contain NaN or infinite values"),
    ("nms", (B, S, float("nan")), ValueError, "iou_threshold must be finite"),
    ("nms", (B, S, "0.5"), TypeError, "iou_threshold must be a number"),
    ("nms", (B, S.to("meta"), 0.5), ValueError, "same device, got cpu and meta"),
    ("batched_nms", (B, S, I.float(), 0.5), TypeError, "idxs must be an integer tensor"),
    ("batched_nms", (B, S, I.bool(), 0.5), TypeError, "idxs must be an integer tensor"),
    ("batched_nms", (B, S, I[:1], 0.5), ValueError, "boxes and idxs must have the same length"),
    ("batched_nms", (B, S, I[None], 0.5), ValueError, r"idxs must have shape \(N,\)"),
    ("batched_nms", (B, S, I.to("meta"), 0.5), ValueError, "same device"),
    ("batched_nms", (NAN_B, S, I, 0.5), ValueError, "boxes contain NaN or infinite values"),
]


@pytest.mark.parametrize("fn, args, error, message", BAD_INPUTS)
def test_bad_input_raises_one_clear_line(backend, fn, args, error, message):
    with pytest.raises(error, match=message) as info:
        getattr(ops, fn)(*args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((NAN_B, S, 0.5), ValueError, "boxes contain NaN or infinite values"),
        ((B, INF_S, 0.5), ValueError, "scores contain NaN or infinite values"),
        ((B, S[:1], 0.5), ValueError, "same length"),
        ((B.int(), S, 0.5), TypeError, "floating-point"),
        ((B[:, :2], S, 0.5), ValueError, r"shape \(N, 4\)"),
    ],
)
def test_compiled_operator_checks_its_inputs(args, error, message):
    if not ops.has_compiled_nms():
        pytest.skip("posenet._C is not built")
    with pytest.raises(error, match=message) as info:
        torch.ops.posenet.nms(*args)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- backends


def test_backend_selection(monkeypatch):
    monkeypatch.setattr(nms_module, "_backend_override", None)
    monkeypatch.setenv(ops.BACKEND_ENV, "torch")
    assert ops.get_nms_backend() == "torch"
    monkeypatch.setenv(ops.BACKEND_ENV, "sideways")
    with pytest.raises(ValueError, match="POSENET_NMS_BACKEND must be one of"):
        ops.nms(B, S, 0.5)
    monkeypatch.delenv(ops.BACKEND_ENV)
    assert ops.get_nms_backend() == "auto"
    with pytest.raises(ValueError, match="must be one of"):
        ops.set_nms_backend("fast")
    ops.set_nms_backend("torch")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an explicit choice never warns
            assert ops.nms(B, S, 0.5).tolist() == [0, 1]
    finally:
        ops.set_nms_backend(None)


def test_fallback_warns_once_when_extension_is_missing(monkeypatch):
    # As in a process where posenet._C does not load: the import fails, the pure-torch
    # implementation answers the same, one warning says why, and an explicit "compiled" refuses.
    import posenet

    monkeypatch.delenv(ops.BACKEND_ENV, raising=False)
    monkeypatch.delattr(posenet, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "posenet._C", None)  # the import raises ImportError
    for name, value in (("_compiled_loaded", None), ("_compiled_error", ""), ("_warned", False)):
        monkeypatch.setattr(nms_module, name, value)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + 30 * torch.rand(300, 2, generator=g)], 1)
    scores = torch.rand(300, generator=g)
    idxs = torch.randint(0, 3, (300,), generator=g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ops.nms(boxes, scores, 0.5)
        second = ops.nms(boxes, scores, 0.5)
        batched = ops.batched_nms(boxes, scores, idxs, 0.5)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not ops.has_compiled_nms()
    assert len(messages) == 1, messages
    assert "posenet._C did not load (ModuleNotFoundError" in messages[0]
    assert torch.equal(first, torchvision.ops.nms(boxes, scores, 0.5))
    assert torch.equal(second, first)
    assert torch.equal(batched, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
    ops.set_nms_backend("compiled")
    try:
        with pytest.raises(RuntimeError, match="POSENET_NMS_BACKEND=compiled"):
            ops.nms(boxes, scores, 0.5)
    finally:
        ops.set_nms_backend(None)


def test_fallback_is_blockwise_exact_across_blocks(monkeypatch):
    # Small blocks force many blocks and suppression across blocks in the fallback.
    monkeypatch.setattr(nms_module, "_BLOCK", 37)
    monkeypatch.setattr(nms_module, "_KEPT_CHUNK", 11)
    g = torch.Generator().manual_seed(8)
    for kind in ("clustered", "tied", "degenerate", "uniform"):
        boxes, scores = make_case(g, 400, kind)
        idxs = torch.randint(0, 3, (400,), generator=g)
        assert torch.equal(
            nms_module._torch_nms(boxes, scores, None, 0.5), torchvision.ops.nms(boxes, scores, 0.5)
        )
        assert torch.equal(
            nms_module._torch_nms(boxes, scores, idxs, 0.5), batched_reference(boxes, scores, idxs, 0.5)
        )


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_narrower_simd_variants_of_the_cpu_kernel(isa):
    # The CPU kernel runs its inner loop in the widest instruction set available;
    # set_cpu_isa (or POSENET_NMS_ISA at load) picks a narrower one, which must give the same answers.
    if not ops.has_compiled_nms():
        pytest.skip("posenet._C is not built")
    from posenet import _C

    order = ["baseline", "avx2", "avx512"]
    widest = _C.cpu_isa()
    if order.index(widest) < order.index(isa):
        pytest.skip(f"this CPU has no {isa}")
    with pytest.raises(ValueError, match="not an instruction set"):
        _C.set_cpu_isa("sse9")
    previous = _C.set_cpu_isa(isa)
    try:
        assert _C.cpu_isa() == isa
        bad = []
        for case, kind, boxes, scores, idxs, thr in random_cases(seed=12, count=300):
            for dtype in (torch.float32, torch.float64):
                b, s = boxes.to(dtype), scores.to(dtype)
                if not torch.equal(torch.ops.posenet.nms(b, s, thr), torchvision.ops.nms(b, s, thr)):
                    bad.append((case, kind, str(dtype)))
            if not torch.equal(torch.ops.posenet.batched_nms(boxes, scores, idxs, thr),
                               batched_reference(boxes, scores, idxs, thr)):
                bad.append((case, kind, "batched"))
        assert not bad, bad[:10]
    finally:
        _C.set_cpu_isa(previous)
    assert _C.cpu_isa() == widest


# --------------------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cuda_backend():
    if not ops.has_compiled_nms() or not torch._C._dispatch_has_kernel_for_dispatch_key(
        "posenet::nms", "CUDA"
    ):
        pytest.fail("posenet._C was built without its CUDA kernel on a machine with a GPU")


@pytest.mark.cuda
@cuda
def test_cuda_matches_cpu_and_torchvision():
    _cuda_backend()
    failures = []
    for case, kind, boxes, scores, idxs, thr in random_cases(seed=9, count=300):
        cpu = ops.nms(boxes, scores, thr)
        gpu = ops.nms(boxes.cuda(), scores.cuda(), thr)
        if gpu.device.type != "cuda" or not torch.equal(gpu.cpu(), cpu):
            failures.append(("cpu", case, kind))
        if kind == "integer":
            # Integer coordinates make every product exact, so torchvision's CUDA kernel (which
            # may fuse multiply-adds) cannot round differently.
            if not torch.equal(gpu.cpu(), torchvision.ops.nms(boxes.cuda(), scores.cuda(), thr).cpu()):
                failures.append(("torchvision", case, kind))
        batched = ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thr)
        if not torch.equal(batched.cpu(), ops.batched_nms(boxes, scores, idxs, thr)):
            failures.append(("batched", case, kind))
    assert not failures, failures[:10]


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_dtypes_and_large_inputs(dtype):
    _cuda_backend()
    g = torch.Generator().manual_seed(10)
    for n, kind in ((5000, "clustered"), (20000, "uniform"), (300, "tied")):
        boxes, scores = make_case(g, n, kind)
        boxes, scores = boxes.to(dtype), scores.to(dtype)
        idxs = torch.randint(0, 5, (n,), generator=g)
        assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), ops.nms(boxes, scores, 0.5))
        assert torch.equal(
            ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(),
            ops.batched_nms(boxes, scores, idxs, 0.5),
        )


@pytest.mark.cuda
@cuda
def test_cuda_stream_device_empty_and_errors():
    _cuda_backend()
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    g = torch.Generator().manual_seed(11)
    boxes, scores = make_case(g, 1000, "clustered")
    expected = ops.nms(boxes, scores, 0.5)
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        got = ops.nms(boxes.to(device), scores.to(device), 0.5)
    stream.synchronize()
    assert got.device == device and torch.equal(got.cpu(), expected)
    empty = ops.nms(torch.empty(0, 4, device=device), torch.empty(0, device=device), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64 and empty.device == device
    with pytest.raises(ValueError, match="boxes contain NaN"):
        ops.nms(NAN_B.to(device), S.to(device), 0.5)
    with pytest.raises(ValueError, match="same device"):
        ops.nms(B.to(device), S, 0.5)
