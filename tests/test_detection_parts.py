import math

import pytest
import torch
import torchvision

from posenet.codecs import BoxCoder
from posenet.models.anchors import AnchorGenerator
from posenet.models.retinanet import (
    RetinaNetHead,
    box_ioa,
    box_iou,
    match_anchors,
    sigmoid_focal_loss,
)

STRIDES = (8, 16, 32, 64, 128)


pytestmark = pytest.mark.usefixtures("single_thread")  # the tensors here are tiny


def feature_sizes_for(height, width):
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


def random_boxes(gen, n, dtype=torch.float32, min_size=2.0, max_size=200.0):
    centre = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 500
    size = min_size + torch.rand(n, 2, generator=gen, dtype=torch.float64) * (max_size - min_size)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1).to(dtype)


# --------------------------------------------------------------------------- BoxCoder


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_coder_round_trip(dtype):
    gen = torch.Generator().manual_seed(0)
    coder = BoxCoder()
    boxes, anchors = random_boxes(gen, 500, dtype), random_boxes(gen, 500, dtype)
    deltas = coder.encode(boxes, anchors)
    assert deltas.dtype == dtype and deltas.shape == (500, 4)
    decoded = coder.decode(deltas, anchors)
    assert decoded.dtype == dtype
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(decoded, boxes, atol=tol, rtol=0)


def test_box_coder_broadcasts_and_decodes_zero_deltas_to_anchors():
    gen = torch.Generator().manual_seed(1)
    coder = BoxCoder()
    boxes, anchors = random_boxes(gen, 3), random_boxes(gen, 7)
    deltas = coder.encode(boxes[:, None], anchors[None])
    assert deltas.shape == (3, 7, 4)
    torch.testing.assert_close(deltas[2, 5], coder.encode(boxes[2], anchors[5]))
    torch.testing.assert_close(coder.decode(torch.zeros(7, 4), anchors), anchors)
    # half-precision inputs are computed in float32
    assert coder.decode(torch.zeros(7, 4, dtype=torch.float16), anchors.half()).dtype == torch.float32


def test_box_coder_known_deltas_and_clamp():
    coder = BoxCoder()
    anchor = torch.tensor([0.0, 0.0, 10.0, 20.0])  # centre (5, 10), size 10 x 20
    box = torch.tensor([-3.0, -4.0, 17.0, 16.0])  # centre (7, 6), size 20 x 20
    expected = torch.tensor([2 / 10 / 0.1, -4 / 20 / 0.1, math.log(2) / 0.2, 0.0])
    torch.testing.assert_close(coder.encode(box, anchor), expected)
    torch.testing.assert_close(coder.decode(expected, anchor), box)
    huge = coder.decode(torch.tensor([0.0, 0.0, 1e4, 1e4]), anchor)
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge[2] - huge[0], torch.tensor(10.0 * 1000 / 16))


# --------------------------------------------------------------------------- anchors


def test_anchor_layout_centres_areas_and_ratios():
    gen = AnchorGenerator()
    assert gen.num_anchors == 9
    sizes = [(6, 10), (3, 5), (2, 3), (1, 2), (1, 1)]
    anchors = gen(sizes, "cpu")
    assert len(anchors) == 5
    ratios = torch.tensor([0.5, 1.0, 2.0]).repeat_interleave(3)
    scales = torch.tensor([1.0, 2 ** (1 / 3), 2 ** (2 / 3)]).repeat(3)
    for level, ((h, w), stride, size) in enumerate(zip(sizes, STRIDES, (32, 64, 128, 256, 512))):
        a = anchors[level]
        assert a.dtype == torch.float32 and a.shape == (h * w * 9, 4)
        grid = a.view(h, w, 9, 4)
        centres = (grid[..., :2] + grid[..., 2:]) / 2
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        torch.testing.assert_close(centres[..., 0], ((xs + 0.5) * stride).float()[..., None].expand(h, w, 9))
        torch.testing.assert_close(centres[..., 1], ((ys + 0.5) * stride).float()[..., None].expand(h, w, 9))
        widths = grid[..., 2] - grid[..., 0]
        heights = grid[..., 3] - grid[..., 1]
        torch.testing.assert_close(widths * heights, ((size * scales) ** 2).expand(h, w, 9), rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(heights / widths, ratios.expand(h, w, 9))
        torch.testing.assert_close(widths[0, 0], size * scales / ratios.sqrt())


def test_anchor_cache_and_errors():
    gen = AnchorGenerator(cache_size=2)
    sizes = feature_sizes_for(64, 96)
    first = gen(sizes, torch.device("cpu"))
    second = gen([list(s) for s in sizes], "cpu")
    assert all(a is b for a, b in zip(first, second))
    gen(feature_sizes_for(128, 128), "cpu")
    gen(feature_sizes_for(256, 128), "cpu")
    assert len(gen._cache) == 2
    assert gen(sizes, "cpu")[0] is not first[0]
    with pytest.raises(ValueError, match="expected 5 feature-map sizes"):
        gen(sizes[:4], "cpu")


# --------------------------------------------------------------------------- focal loss


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5)])
def test_focal_loss_matches_torchvision(reduction, alpha, gamma):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(64, 3, generator=gen) * 4
    targets = (torch.rand(64, 3, generator=gen) > 0.7).float()
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    ref = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    torch.testing.assert_close(ours, ref)


def test_focal_loss_extreme_logits_stay_finite():
    logits = torch.tensor([50.0, -50.0, 50.0, -50.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = sigmoid_focal_loss(logits, targets)
    assert torch.isfinite(loss).all()
    assert loss[:2].abs().max() < 1e-6  # confident and right
    torch.testing.assert_close(loss[2:], torch.tensor([0.75 * 50, 0.25 * 50]))
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError):
        sigmoid_focal_loss(logits, targets, reduction="avg")


# --------------------------------------------------------------------------- matching


def test_box_iou_and_ioa():
    gen = torch.Generator().manual_seed(3)
    a, b = random_boxes(gen, 20), random_boxes(gen, 30)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b))
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
    region = torch.tensor([[5.0, 0.0, 100.0, 100.0]])
    torch.testing.assert_close(box_ioa(anchors, region), torch.tensor([[0.5], [0.0]]))


def test_match_positive_ignored_and_background():
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 100/210 with gt 0 -> ignored
            [0.0, 0.0, 10.0, 20.0],  # IoU 200/210 with gt 0 -> positive
            [50.0, 50.0, 60.0, 60.0],  # equal to gt 1 -> positive
            [200.0, 200.0, 220.0, 220.0],  # far away -> background
        ]
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 21.0], [50.0, 50.0, 60.0, 60.0]])
    matches = match_anchors(anchors, gt)
    assert matches.dtype == torch.int64
    assert matches.tolist() == [-2, 0, 1, -1]


def test_match_low_quality():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [100.0, 100.0, 110.0, 110.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 30.0]])  # best IoU 1/3 with anchor 0
    assert match_anchors(anchors, gt).tolist() == [0, -1, -1]
    assert match_anchors(anchors, gt, allow_low_quality=False).tolist() == [-1, -1, -1]
    # a gt box touching no anchor claims none
    assert match_anchors(anchors, torch.tensor([[300.0, 300.0, 310.0, 310.0]])).tolist() == [-1, -1, -1]


def test_match_crowd_ignores_negatives_only():
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [104.0, 100.0, 114.0, 110.0], [200.0, 0.0, 210.0, 10.0]]
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    crowd = torch.tensor([[-5.0, -5.0, 108.0, 120.0]])  # covers anchor 0 (positive), 1 fully, 2 by 40%
    assert match_anchors(anchors, gt, crowd).tolist() == [0, -2, -1, -1]
    assert match_anchors(anchors, gt, torch.zeros(0, 4)).tolist() == [0, -1, -1, -1]
    assert match_anchors(anchors, torch.zeros(0, 4), crowd).tolist() == [-2, -2, -1, -1]


def test_match_without_gt_is_background():
    anchors = torch.cat(AnchorGenerator()(feature_sizes_for(64, 64)))
    matches = match_anchors(anchors, torch.zeros(0, 4))
    assert matches.shape == (anchors.shape[0],) and (matches == -1).all()


# --------------------------------------------------------------------------- head


def tiny_head(**kwargs):
    torch.manual_seed(0)
    return RetinaNetHead(in_channels=16, num_convs=2, **kwargs)


def features_for(sizes, n=2, channels=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, channels, h, w, generator=gen) for h, w in sizes]


@pytest.mark.parametrize("image_size", [(64, 64), (48, 80)])
def test_head_output_shapes(image_size):
    head = tiny_head()
    sizes = feature_sizes_for(*image_size)
    out = head(features_for(sizes))
    total = sum(h * w * 9 for h, w in sizes)
    assert out["cls_logits"].shape == (2, total, 1)
    assert out["box_deltas"].shape == (2, total, 4)
    assert [a.shape[0] for a in out["anchors"]] == [h * w * 9 for h, w in sizes]
    assert [tuple(s) for s in out["feature_sizes"]] == sizes
    # prior probability at initialisation
    assert abs(torch.sigmoid(out["cls_logits"]).mean().item() - 0.01) < 2e-3


def test_head_flatten_order_matches_anchor_order():
    head = tiny_head()
    with torch.no_grad():
        for conv in (head.cls_logits, head.box_deltas):
            conv.weight.zero_()
            conv.bias.copy_(torch.arange(conv.bias.numel(), dtype=torch.float32))
    sizes = feature_sizes_for(48, 80)
    out = head(features_for(sizes, n=1))
    num_locations = sum(h * w for h, w in sizes)
    torch.testing.assert_close(out["cls_logits"][0, :, 0], torch.arange(9.0).repeat(num_locations))
    torch.testing.assert_close(out["box_deltas"][0], torch.arange(36.0).view(9, 4).repeat(num_locations, 1))


def test_head_loss_finite_and_backward():
    head = tiny_head()
    out = head(features_for(feature_sizes_for(64, 64)))
    targets = {
        "boxes": [
            torch.tensor([[4.0, 6.0, 40.0, 60.0], [30.0, 20.0, 50.0, 36.0]]),
            torch.tensor([[10.0, 10.0, 60.0, 50.0]]),
        ],
        "crowd_boxes": [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 20.0, 64.0]])],
    }
    losses = head.compute_loss(out, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_detection"}
    for value in losses.values():
        assert value.ndim == 0 and torch.isfinite(value) and value > 0
    torch.testing.assert_close(losses["loss_detection"], losses["loss_cls"] + losses["loss_box"])
    losses["loss_detection"].backward()
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert head.box_deltas.weight.grad.abs().sum() > 0


def test_head_loss_without_gt_boxes():
    head = tiny_head()
    out = head(features_for(feature_sizes_for(64, 64)))
    losses = head.compute_loss(out, {"boxes": [torch.zeros(0, 4)] * 2, "crowd_boxes": [torch.zeros(0, 4)] * 2})
    assert losses["loss_box"].item() == 0.0
    assert losses["loss_cls"] > 0
    torch.testing.assert_close(losses["loss_detection"], losses["loss_cls"])
    losses["loss_detection"].backward()
    # a crowd region over the whole image leaves nothing to classify
    everything = torch.tensor([[-1000.0, -1000.0, 2000.0, 2000.0]])
    crowd_only = head.compute_loss(out, {"boxes": [torch.zeros(0, 4)] * 2, "crowd_boxes": [everything] * 2})
    assert crowd_only["loss_detection"].item() == 0.0


def test_persons_below_min_box_size_are_not_targets():
    out = tiny_head()(features_for(feature_sizes_for(64, 64), n=1))
    tiny, large = torch.tensor([[30.0, 30.0, 34.0, 35.0]]), torch.tensor([[8.0, 4.0, 40.0, 60.0]])
    plain = tiny_head().compute_loss(out, {"boxes": [tiny]})
    assert plain["loss_box"] > 0  # forced low-quality match of a 4x5 px person
    strict = tiny_head(min_box_size=12).compute_loss(out, {"boxes": [tiny]})
    assert strict["loss_box"].item() == 0.0
    both = torch.cat([tiny, large])
    torch.testing.assert_close(tiny_head(min_box_size=12).compute_loss(out, {"boxes": [both]})["loss_box"],
                               tiny_head().compute_loss(out, {"boxes": [large]})["loss_box"])


def test_head_training_reduces_loss():
    head = tiny_head()
    features = features_for(feature_sizes_for(64, 64), n=1, seed=5)
    targets = {
        "boxes": [torch.tensor([[8.0, 4.0, 40.0, 60.0], [36.0, 30.0, 60.0, 50.0]])],
        "crowd_boxes": [torch.zeros(0, 4)],
    }
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = head.compute_loss(head(features), targets)
        history.append(losses["loss_detection"].item())
        optimizer.zero_grad()
        losses["loss_detection"].backward()
        optimizer.step()
    assert history[-1] < 0.3 * history[0]


# --------------------------------------------------------------------------- postprocess


def reference_postprocess(head, outputs, image_size, score_threshold, topk, nms_threshold, max_detections):
    """The same pipeline written step by step with torchvision's NMS."""
    height, width = image_size
    boxes, scores = [], []
    start = 0
    for anchors in outputs["anchors"]:
        stop = start + anchors.shape[0]
        s = torch.sigmoid(outputs["cls_logits"][0, start:stop, 0])
        idx = torch.nonzero(s > score_threshold).flatten()
        idx = idx[s[idx].argsort(descending=True)][:topk]
        b = head.box_coder.decode(outputs["box_deltas"][0, start:stop][idx], anchors[idx])
        b[:, 0::2] = b[:, 0::2].clamp(0, width)
        b[:, 1::2] = b[:, 1::2].clamp(0, height)
        boxes.append(b)
        scores.append(s[idx])
        start = stop
    boxes, scores = torch.cat(boxes), torch.cat(scores)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores = boxes[ok], scores[ok]
    keep = torchvision.ops.nms(boxes, scores, nms_threshold)[:max_detections]
    return boxes[keep], scores[keep]


def random_outputs(image_size, seed):
    head = tiny_head()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = head(features_for(feature_sizes_for(*image_size), n=1, seed=seed))
    out["cls_logits"] = torch.randn(out["cls_logits"].shape, generator=gen) * 2 - 2
    out["box_deltas"] = torch.randn(out["box_deltas"].shape, generator=gen)
    return head, out


def test_postprocess_boxes_inside_sorted_and_capped():
    image_size = (60, 90)
    head, out = random_outputs((64, 96), seed=6)
    (result,) = head.postprocess(out, [image_size], max_detections=25)
    boxes, scores = result["boxes"], result["scores"]
    assert 0 < boxes.shape[0] <= 25 and scores.shape == (boxes.shape[0],)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 90).all() and (boxes[:, 3] <= 60).all()
    assert (scores[:-1] >= scores[1:]).all() and (scores > 0.05).all()


@pytest.mark.parametrize("seed,topk,nms_threshold", [(7, 1000, 0.5), (8, 40, 0.3), (9, 200, 0.7)])
def test_postprocess_agrees_with_torchvision_nms(seed, topk, nms_threshold):
    head, out = random_outputs((64, 96), seed=seed)
    (result,) = head.postprocess(out, [(64, 96)], topk_per_level=topk, nms_threshold=nms_threshold, max_detections=60)
    boxes, scores = reference_postprocess(head, out, (64, 96), 0.05, topk, nms_threshold, 60)
    torch.testing.assert_close(result["boxes"], boxes)
    torch.testing.assert_close(result["scores"], scores)


def test_postprocess_returns_a_confident_anchor_exactly():
    head = tiny_head()
    sizes = feature_sizes_for(64, 64)
    anchors = AnchorGenerator()(sizes)
    total = sum(a.shape[0] for a in anchors)
    index = (3 * 8 + 4) * 9 + 4  # level P3, y = 3, x = 4, ratio 1, scale 2 ** (1/3)
    logits = torch.full((2, total, 1), -10.0)
    logits[0, index] = 10.0
    out = {"cls_logits": logits, "box_deltas": torch.zeros(2, total, 4), "anchors": anchors, "feature_sizes": sizes}
    first, second = head.postprocess(out, [(64, 64), (64, 64)])
    assert anchors[0][index].tolist() == pytest.approx([36 - 20.16, 28 - 20.16, 36 + 20.16, 28 + 20.16], abs=0.01)
    torch.testing.assert_close(first["boxes"], anchors[0][index][None])
    torch.testing.assert_close(first["scores"], torch.sigmoid(torch.tensor([10.0])))
    assert second["boxes"].shape == (0, 4) and second["scores"].shape == (0,)


def test_anchor_sizes_are_a_head_and_config_choice():
    from posenet.config import build, load_config

    half = RetinaNetHead(in_channels=8, num_convs=1, anchor_sizes=[16, 32, 64, 128, 256])
    full = RetinaNetHead(in_channels=8, num_convs=1)
    sizes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    small, big = half.anchor_generator(sizes, "cpu")[0], full.anchor_generator(sizes, "cpu")[0]
    wh_small, wh_big = small[:, 2:] - small[:, :2], big[:, 2:] - big[:, :2]
    torch.testing.assert_close(wh_small, wh_big / 2)
    with pytest.raises(ValueError, match="not both"):
        RetinaNetHead(anchor_sizes=[16, 32, 64, 128, 256], anchor_generator=AnchorGenerator())
    cfg = load_config(None, ["data.root=unused", "model.pretrained=none", "model.backbone_depth=18",
                             "detection.anchor_sizes=[16,32,64,128,256]"])
    model = build.posenet_model(cfg, 17, detection=True)
    assert model.detection_head.anchor_generator.sizes == (16.0, 32.0, 64.0, 128.0, 256.0)
