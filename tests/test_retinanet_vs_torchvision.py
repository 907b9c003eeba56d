"""posenet's RetinaNet parts against torchvision's own RetinaNet (docs/design.md §2, "RetinaNet
against torchvision").

Held equal within float tolerance: the head's forward (weights copied parameter by parameter),
the focal loss at extreme logits, the box coder at weights (10, 10, 5, 5), the matcher's
positive / ignore / negative bands, the single-image losses and the post-processing.
test_detection_parts.py already compares the IoU and the focal loss on ordinary logits with
torchvision; they are not repeated here.

The deliberate differences, each asserted as what posenet does in its own test below and left
out of the equality checks only where a docstring says so:

* crowd regions: background anchors mostly inside one are ignored (torchvision has no crowds);
* the low-quality tie rule: an anchor that is the best anchor of some boxes goes to the one of
  those boxes it overlaps most (torchvision: to the box it overlaps most among all boxes), and a
  box that touches no anchor claims none (torchvision: every anchor becomes a positive of its
  best box, box 0 where it touches none);
* the anchor grid: centres at the cell centres and unrounded sizes (torchvision: cell corners,
  base anchors rounded to whole pixels, the default sizes truncated to integers);
* the box coder's weights (10, 10, 5, 5) and smooth-L1 (beta 1/9) in the box loss (torchvision's
  RetinaNet: weights (1, 1, 1, 1) and L1);
* the loss normalisation: summed over the batch, divided by the batch's positives (torchvision:
  per image by its positives, then the mean over the images);
* post-processing drops the boxes that clipping to the image leaves empty (torchvision keeps
  them, and they can take places among the detections per image).
"""
import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
from torchvision.models.detection.retinanet import (
    RetinaNet,
    RetinaNetClassificationHead,
    RetinaNetRegressionHead,
)
from torchvision.ops.boxes import _box_inter_union, box_area

from posenet.codecs import BoxCoder
from posenet.models.anchors import AnchorGenerator
from posenet.models.retinanet import BACKGROUND, IGNORED, RetinaNetHead, match_anchors, sigmoid_focal_loss

STRIDES = (8, 16, 32, 64, 128)
TV_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's BoxCoder weights = 1 / posenet's std


pytestmark = pytest.mark.usefixtures("single_thread")  # the tensors here are tiny


def feature_sizes_for(height, width):
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


def random_boxes(gen, n, extent=(160.0, 128.0), min_size=8.0, max_size=128.0):
    """(n, 4) float32 boxes with centres inside an image of (width, height) ``extent``."""
    centre = torch.rand(n, 2, generator=gen) * torch.tensor(extent)
    size = min_size + torch.rand(n, 2, generator=gen) * (max_size - min_size)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def tv_retinanet(num_classes, **kwargs):
    """torchvision's RetinaNet on an identity backbone (only its heads, matcher and
    post-processing are used), with posenet's box-coder weights."""
    backbone = nn.Identity()
    backbone.out_channels = 8
    model = RetinaNet(backbone, num_classes, **kwargs).eval()
    model.box_coder = det_utils.BoxCoder(TV_WEIGHTS)
    return model


def contested_anchors(iou):
    """Anchors where the two low-quality rules differ: the best anchor of some box (IoU > 0)
    whose overall best box does not have it as its best anchor."""
    best = iou.max(dim=1, keepdim=True).values
    is_best = (iou == best) & (best > 0)
    top = iou.argmax(dim=0)
    return is_best.any(dim=0) & ~is_best.gather(0, top[None])[0]


# --------------------------------------------------------------------------- head forward


def tv_to_posenet_names(num_convs=4):
    """torchvision head parameter -> posenet RetinaNetHead parameter. torchvision's towers are
    Conv2dNormActivation blocks (conv at index 0, no norm layer for RetinaNet v1, then ReLU);
    posenet's are flat Sequentials of (conv, ReLU), so conv i sits at index 2 i."""
    names = {}
    for i in range(num_convs):
        for kind in ("weight", "bias"):
            names[f"cls.conv.{i}.0.{kind}"] = f"cls_tower.{2 * i}.{kind}"
            names[f"box.conv.{i}.0.{kind}"] = f"box_tower.{2 * i}.{kind}"
    for kind in ("weight", "bias"):
        names[f"cls.cls_logits.{kind}"] = f"cls_logits.{kind}"
        names[f"box.bbox_reg.{kind}"] = f"box_deltas.{kind}"
    return names


@pytest.mark.parametrize("num_classes", [1, 3])
def test_head_forward_matches_torchvision_heads(num_classes):
    """Same weights, same feature maps -> the same logits and deltas on every level.

    torchvision's heads (RetinaNet v1: no GroupNorm, 4 convs per tower) against posenet's with
    ``num_convs=4``; posenet's person detector has ``num_classes=1`` (no background channel,
    sigmoid per class as in torchvision), 3 checks the ``a * K + k`` channel layout. Both
    flatten to (N, h * w * A, K), rows in (y, x, anchor) order: no re-layout is needed."""
    channels, num_anchors = 8, 9
    torch.manual_seed(0)
    tv_cls = RetinaNetClassificationHead(channels, num_anchors, num_classes)
    tv_box = RetinaNetRegressionHead(channels, num_anchors)
    head = RetinaNetHead(in_channels=channels, num_anchors=num_anchors, num_classes=num_classes, num_convs=4)
    # the initialisation agrees too: prior-probability bias, zero biases elsewhere
    torch.testing.assert_close(head.cls_logits.bias, tv_cls.cls_logits.bias)
    torch.testing.assert_close(head.box_deltas.bias, tv_box.bbox_reg.bias)

    gen = torch.Generator().manual_seed(1)
    tv_params = {f"cls.{k}": v for k, v in tv_cls.state_dict().items()}
    tv_params.update({f"box.{k}": v for k, v in tv_box.state_dict().items()})
    names = tv_to_posenet_names()
    assert set(names) == set(tv_params) and set(names.values()) == set(head.state_dict())
    with torch.no_grad():
        for value in tv_params.values():  # random weights, so that the outputs differ per anchor
            value.copy_(torch.randn(value.shape, generator=gen) * 0.2)
    head.load_state_dict({names[k]: v for k, v in tv_params.items()}, strict=True)

    sizes = feature_sizes_for(64, 96)
    features = [torch.randn(2, channels, h, w, generator=gen) for h, w in sizes]
    with torch.no_grad():
        out = head(features)
        ref_cls, ref_box = tv_cls(features), tv_box(features)
    counts = [h * w * num_anchors for h, w in sizes]
    assert out["cls_logits"].shape == ref_cls.shape == (2, sum(counts), num_classes)
    assert out["box_deltas"].shape == ref_box.shape == (2, sum(counts), 4)
    for level, (ours, ref) in enumerate(zip(out["cls_logits"].split(counts, 1), ref_cls.split(counts, 1))):
        torch.testing.assert_close(ours, ref, msg=lambda m: f"cls_logits, level P{level + 3}: {m}")
    for level, (ours, ref) in enumerate(zip(out["box_deltas"].split(counts, 1), ref_box.split(counts, 1))):
        torch.testing.assert_close(ours, ref, msg=lambda m: f"box_deltas, level P{level + 3}: {m}")
    assert ref_cls.abs().max() > 0.1  # the comparison is not between near-zero outputs


# --------------------------------------------------------------------------- focal loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_focal_loss_extreme_logits_match_torchvision(dtype):
    """Element-wise values and gradients against torchvision.ops.sigmoid_focal_loss (alpha 0.25,
    gamma 2, no reduction) for logits up to +-1e4, where sigmoid saturates, with hard and soft
    targets (test_detection_parts.py covers ordinary logits and the reductions)."""
    gen = torch.Generator().manual_seed(3)
    extreme = torch.tensor([-1e4, -200.0, -88.0, -40.0, -17.0, -1e-3, 0.0, 1e-3, 17.0, 40.0, 88.0, 200.0, 1e4])
    logits = torch.cat([extreme.repeat(3), torch.randn(40, generator=gen) * 30]).to(dtype)
    targets = torch.cat([torch.zeros(13), torch.ones(13), torch.full((13,), 0.3),
                         (torch.rand(40, generator=gen) > 0.5).float()]).to(dtype)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(ours_in, targets, 0.25, 2.0, "none")
    ref = torchvision.ops.sigmoid_focal_loss(ref_in, targets, 0.25, 2.0, "none")
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours, ref)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad)


# --------------------------------------------------------------------------- box coder


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_box_coder_matches_torchvision(dtype):
    """posenet's BoxCoder (std 0.1, 0.1, 0.2, 0.2) is torchvision's BoxCoder with weights
    (10, 10, 5, 5) and the same bbox_xform_clip log(1000 / 16): encode, and decode with
    deltas beyond the clip (clamped before exp in both)."""
    gen = torch.Generator().manual_seed(4)
    coder = BoxCoder()
    ref = det_utils.BoxCoder(TV_WEIGHTS)
    assert coder.clamp == pytest.approx(ref.bbox_xform_clip)
    boxes, anchors = random_boxes(gen, 300).to(dtype), random_boxes(gen, 300).to(dtype)
    torch.testing.assert_close(coder.encode(boxes, anchors), ref.encode_single(boxes, anchors))
    deltas = (torch.randn(300, 4, generator=gen) * 3).to(dtype)
    deltas[:20, 2:] = 30.0  # exp(30 / 5) would exceed the clip: both clamp
    deltas[20:40, 2:] = -30.0  # not clamped below in either
    decoded, expected = coder.decode(deltas, anchors), ref.decode_single(deltas, anchors)
    torch.testing.assert_close(decoded, expected)
    widths = expected[:20, 2] - expected[:20, 0]
    torch.testing.assert_close(widths, (anchors[:20, 2] - anchors[:20, 0]) * 1000 / 16)


def test_box_coder_round_trip_across_implementations():
    """Encoded by one, decoded by the other: the boxes come back (float32, 1e-3 px)."""
    gen = torch.Generator().manual_seed(5)
    coder, ref = BoxCoder(), det_utils.BoxCoder(TV_WEIGHTS)
    boxes, anchors = random_boxes(gen, 300), random_boxes(gen, 300)
    torch.testing.assert_close(ref.decode_single(coder.encode(boxes, anchors), anchors), boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(coder.decode(ref.encode_single(boxes, anchors), anchors), boxes, atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- matcher


def test_match_codes_are_torchvision_codes():
    assert BACKGROUND == det_utils.Matcher.BELOW_LOW_THRESHOLD
    assert IGNORED == det_utils.Matcher.BETWEEN_THRESHOLDS


@pytest.mark.parametrize("seed", range(12))
def test_matcher_bands_match_torchvision(seed):
    """match_anchors against Matcher(0.5, 0.4) on torchvision's box_iou, posenet's anchors of a
    160x128 image and 8 random boxes.

    Without low-quality matches the two are equal everywhere: positives (with their box),
    the ignore band [0.4, 0.5) and the negatives. With them (Matcher(..., True)) they are
    equal on every anchor except the contested ones (``contested_anchors``: the best anchor
    of some box whose overall best box is another one), where posenet's tie rule applies on
    purpose (test_low_quality_tie_rule_*). No crowd regions here (test_crowd_regions_*)."""
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.cat(AnchorGenerator()(feature_sizes_for(128, 160)))
    gt = random_boxes(gen, 8)
    iou = torchvision.ops.box_iou(gt, anchors)

    plain = match_anchors(anchors, gt, allow_low_quality=False)
    ref_plain = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=False)(iou)
    assert torch.equal(plain, ref_plain)
    assert (plain >= 0).any() and (plain == IGNORED).any() and (plain == BACKGROUND).any()

    ours = match_anchors(anchors, gt)
    ref = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)(iou)
    contested = contested_anchors(iou)
    assert contested.sum() <= gt.shape[0] * 2  # a handful: ties among a box's best anchors at most
    assert torch.equal(ours[~contested], ref[~contested])
    # where they differ, posenet's box has the anchor as its best one
    best_of = iou == iou.max(dim=1, keepdim=True).values
    for a in contested.nonzero().flatten():
        assert best_of[ours[a], a] and not best_of[ref[a], a]


@pytest.mark.parametrize("second_box,tv_matches", [
    ([0.0, 0.0, 28.0, 10.0], [1, 1, -1]),  # anchor 0 overlaps box 1 by 0.357: low quality
    ([0.0, 0.0, 20.0, 10.0], [1, 1, -1]),  # anchor 0 overlaps box 1 by 0.5: a positive of box 1
], ids=["below_thresholds", "over_positive_threshold"])
def test_low_quality_tie_rule_gives_the_anchor_to_the_box_it_is_best_for(second_box, tv_matches):
    """Deliberate difference. Anchor 0 is box 0's best anchor (IoU 1/3) but overlaps box 1
    more, whose best anchor is anchor 1 (IoU 1). torchvision gives anchor 0 to box 1 (its
    overall best box), leaving box 0 without any positive; posenet gives it to box 0, so that
    every box that touches an anchor has a positive, even where that overrides the threshold
    rule."""
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], second_box, [200.0, 200.0, 210.0, 210.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 30.0], second_box])
    iou = torchvision.ops.box_iou(gt, anchors)
    assert iou[0].argmax() == 0 and iou[0, 0] == pytest.approx(1 / 3) and iou[1, 0] > iou[0, 0]
    assert det_utils.Matcher(0.5, 0.4, True)(iou).tolist() == tv_matches
    assert match_anchors(anchors, gt).tolist() == [0, 1, -1]
    assert contested_anchors(iou).tolist() == [True, False, False]


def test_box_touching_no_anchor_claims_none():
    """Deliberate difference. A box with IoU 0 against every anchor: torchvision's low-quality
    step treats every anchor as its (tied) best and makes each one a positive of the anchor's
    argmax box, whatever the IoU (box 0 for an anchor that touches no box at all); posenet's
    box claims no anchor (its best IoU must be > 0)."""
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [0.0, 0.0, 30.0, 30.0]])
    gt = torch.tensor([[300.0, 300.0, 310.0, 310.0], [0.0, 0.0, 10.0, 12.0]])
    iou = torchvision.ops.box_iou(gt, anchors)
    assert iou[0].max() == 0 and iou[1, 2] < 0.4
    # anchor 1 -> box 0 at IoU 0, anchor 2 -> box 1 at IoU 0.13
    assert det_utils.Matcher(0.5, 0.4, True)(iou).tolist() == [1, 0, 1]
    assert match_anchors(anchors, gt).tolist() == [1, -1, -1]


@pytest.mark.parametrize("seed", range(4))
def test_crowd_regions_ignore_background_anchors(seed):
    """Deliberate difference. torchvision has no crowd regions (a crowd's anchors are
    background); posenet ignores exactly the anchors torchvision calls background whose
    intersection with a crowd box is at least half their own area, and changes nothing else."""
    gen = torch.Generator().manual_seed(100 + seed)
    anchors = torch.cat(AnchorGenerator()(feature_sizes_for(128, 160)))
    gt, crowd = random_boxes(gen, 6), random_boxes(gen, 2, min_size=40.0)
    iou = torchvision.ops.box_iou(gt, anchors)
    ref = det_utils.Matcher(0.5, 0.4, True)(iou)
    inter, _ = _box_inter_union(anchors, crowd)
    in_crowd = (inter / box_area(anchors)[:, None]).max(dim=1).values >= 0.5
    expected = torch.where(in_crowd & (ref == BACKGROUND), IGNORED, ref)
    ours = match_anchors(anchors, gt, crowd)
    contested = contested_anchors(iou)  # the tie rule, see test_matcher_bands_match_torchvision
    assert (in_crowd & (ref == BACKGROUND)).sum() > 0
    assert torch.equal(ours[~contested], expected[~contested])


# --------------------------------------------------------------------------- anchors


def test_anchor_grid_differs_from_torchvision_only_by_offset_and_rounding():
    """Deliberate difference. Same order (locations row-major, then ratio-major, scale-minor)
    and aspect ratios h / w. torchvision centres the anchors on the cell corners (x * stride)
    and rounds its base anchors to whole pixels (its default sizes are moreover truncated
    to integers: 40 for 32 * 2 ** (1/3)); posenet centres them on the cell centres
    ((x + 0.5) * stride) with exact sizes."""
    ours = AnchorGenerator()
    scales = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    ref = TvAnchorGenerator(tuple(tuple(s * c for c in scales) for s in ours.sizes), ((0.5, 1.0, 2.0),) * 5)
    sizes = feature_sizes_for(64, 96)
    strides = [[torch.tensor(s), torch.tensor(s)] for s in STRIDES]
    for level, (a, b) in enumerate(zip(ours(sizes), ref.grid_anchors([list(s) for s in sizes], strides))):
        assert a.shape == b.shape
        torch.testing.assert_close(a - STRIDES[level] / 2, b, atol=0.5, rtol=0)  # rounding only
        torch.testing.assert_close((a[:, :2] + a[:, 2:]) / 2 - STRIDES[level] / 2, (b[:, :2] + b[:, 2:]) / 2)


# --------------------------------------------------------------------------- losses


def image_outputs(seed, sizes, num_images):
    gen = torch.Generator().manual_seed(seed)
    anchors = AnchorGenerator()(sizes)
    total = sum(a.shape[0] for a in anchors)
    return {
        "cls_logits": torch.randn(num_images, total, 1, generator=gen) * 2 - 2,
        "box_deltas": torch.randn(num_images, total, 4, generator=gen),
        "anchors": anchors,
        "feature_sizes": sizes,
    }


def tv_box_loss(anchors, gt, deltas, matches):
    """Summed smooth-L1 (beta 1/9) on torchvision's (10, 10, 5, 5) encoding of the positives."""
    positive = matches >= 0
    return det_utils._box_loss("smooth_l1", det_utils.BoxCoder(TV_WEIGHTS), anchors[positive],
                               gt[matches[positive]], deltas[positive], cnf={"beta": 1 / 9})


def test_single_image_loss_matches_torchvision():
    """One image (where the normalisations coincide) without contested anchors: the focal loss
    is torchvision's RetinaNet classification loss (its own matcher included); the box loss is
    torchvision's smooth-L1 box loss with beta 1/9 and weights (10, 10, 5, 5). torchvision's
    RetinaNet itself uses L1 on (1, 1, 1, 1) deltas: a deliberate difference."""
    sizes = feature_sizes_for(64, 96)
    out = image_outputs(6, sizes, 1)
    gt = torch.tensor([[4.0, 6.0, 40.0, 60.0], [30.0, 20.0, 70.0, 46.0], [60.0, 8.0, 90.0, 62.0]])
    anchors = torch.cat(out["anchors"])
    assert not contested_anchors(torchvision.ops.box_iou(gt, anchors)).any()
    losses = RetinaNetHead(in_channels=8, num_convs=1).compute_loss(out, {"boxes": [gt]})

    model = tv_retinanet(1)
    head_outputs = {"cls_logits": out["cls_logits"], "bbox_regression": out["box_deltas"]}
    ref = model.compute_loss([{"boxes": gt, "labels": torch.zeros(3, dtype=torch.int64)}], head_outputs, [anchors])
    torch.testing.assert_close(losses["loss_cls"], ref["classification"])

    matches = match_anchors(anchors, gt)
    num_positive = int((matches >= 0).sum())
    assert num_positive > 10
    box_sum = tv_box_loss(anchors, gt, out["box_deltas"][0], matches)
    torch.testing.assert_close(losses["loss_box"], box_sum / num_positive)


def test_loss_is_normalised_by_the_batch_positives():
    """Deliberate difference. posenet sums both losses over the batch and divides by the
    batch's positives; torchvision divides each image's sum by its own positives and averages
    over the images, which weighs an anchor of an image with few people more."""
    sizes = feature_sizes_for(64, 96)
    out = image_outputs(7, sizes, 2)
    boxes = [
        torch.tensor([[4.0, 6.0, 40.0, 60.0], [30.0, 20.0, 70.0, 46.0], [60.0, 8.0, 90.0, 62.0]]),
        torch.tensor([[50.0, 30.0, 62.0, 52.0]]),
    ]
    losses = RetinaNetHead(in_channels=8, num_convs=1).compute_loss(out, {"boxes": boxes})

    anchors = torch.cat(out["anchors"])
    matches = [match_anchors(anchors, gt) for gt in boxes]
    num_positive = [int((m >= 0).sum()) for m in matches]
    assert num_positive[0] > 3 * num_positive[1] > 0
    tv_head = tv_retinanet(1).head.classification_head
    per_image = [  # torchvision: sum over image i / its positives
        tv_head.compute_loss([{"labels": torch.zeros(len(gt), dtype=torch.int64)}],
                             {"cls_logits": out["cls_logits"][i:i + 1]}, [matches[i]])
        for i, gt in enumerate(boxes)
    ]
    total = sum(loss * n for loss, n in zip(per_image, num_positive))
    torch.testing.assert_close(losses["loss_cls"], total / sum(num_positive))
    box_sum = sum(tv_box_loss(anchors, gt, out["box_deltas"][i], matches[i]) for i, gt in enumerate(boxes))
    torch.testing.assert_close(losses["loss_box"], box_sum / sum(num_positive))
    torchvision_mean = sum(per_image) / 2
    assert not torch.allclose(losses["loss_cls"], torchvision_mean, rtol=0.05)


@pytest.mark.parametrize("error,low,high", [(0.02, 4.5, 5.0), (0.1, 6.5, 7.1)])
def test_box_loss_scale_against_the_port_and_torchvision(error, low, high):
    """docs/design.md "Loss scales": predictions off by ``error`` (centre by that fraction of
    the box size, size by that log-factor). posenet's default box loss is exactly 4x the port's
    mean over coordinates (``box_loss_norm="coordinates"``) and several times torchvision's
    RetinaNet box loss (L1 on (1, 1, 1, 1) deltas), more so for larger errors."""
    sizes = feature_sizes_for(64, 96)
    out = image_outputs(8, sizes, 1)
    gt = torch.tensor([[4.0, 6.0, 40.0, 60.0], [30.0, 20.0, 70.0, 46.0], [60.0, 8.0, 90.0, 62.0]])
    anchors = torch.cat(out["anchors"])
    matches = match_anchors(anchors, gt)
    positive = matches >= 0
    gen = torch.Generator().manual_seed(9)
    target = gt[matches[positive]]
    wh = target[:, 2:] - target[:, :2]
    centre = (target[:, :2] + target[:, 2:]) / 2 + error * wh * torch.randn(len(target), 2, generator=gen)
    size = wh * torch.exp(error * torch.randn(len(target), 2, generator=gen))
    predicted = torch.cat([centre - size / 2, centre + size / 2], 1)
    deltas = out["box_deltas"].clone()
    deltas[0, positive] = det_utils.BoxCoder(TV_WEIGHTS).encode_single(predicted, anchors[positive])
    out["box_deltas"] = deltas
    ours = RetinaNetHead(in_channels=8, num_convs=1).compute_loss(out, {"boxes": [gt]})["loss_box"]
    port = RetinaNetHead(in_channels=8, num_convs=1, box_loss_norm="coordinates").compute_loss(out, {"boxes": [gt]})
    torch.testing.assert_close(ours, 4 * port["loss_box"])
    plain = det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0))
    tv = det_utils._box_loss("l1", plain, anchors[positive], target, plain.encode_single(predicted, anchors[positive]))
    ratio = float(ours / (tv / int(positive.sum())))
    print(f"box loss {error}: {ratio:.2f}x torchvision")
    assert low < ratio < high, ratio
    with pytest.raises(ValueError, match="box_loss_norm"):
        RetinaNetHead(in_channels=8, num_convs=1, box_loss_norm="images")


# --------------------------------------------------------------------------- post-processing


def tv_postprocess(model, outputs, image_sizes):
    counts = [a.shape[0] for a in outputs["anchors"]]
    head_outputs = {
        "cls_logits": list(outputs["cls_logits"].split(counts, dim=1)),
        "bbox_regression": list(outputs["box_deltas"].split(counts, dim=1)),
    }
    anchors = [list(outputs["anchors"])] * len(image_sizes)
    return model.postprocess_detections(head_outputs, anchors, list(image_sizes))


@pytest.mark.parametrize("num_classes,topk,nms_threshold,max_detections", [
    (1, 100, 0.5, 50),  # the top-k cut active on P3 and P4
    (1, 1000, 0.3, 300),
    (3, 150, 0.5, 80),  # NMS within each class
])
def test_postprocess_matches_torchvision(num_classes, topk, nms_threshold, max_detections):
    """The same head outputs and anchors through posenet's postprocess and torchvision's
    RetinaNet.postprocess_detections (score threshold 0.05, top-k per level, clipping, NMS,
    detections per image), its box coder set to weights (10, 10, 5, 5): the same boxes, scores
    and labels in the same order. Boxes stay non-empty after clipping here (asserted), so
    posenet's dropping of empty boxes (test_postprocess_drops_boxes_emptied_by_clipping)
    does not apply."""
    image_size = (100, 150)  # not a multiple of the strides: the grid overhangs and is clipped
    sizes = feature_sizes_for(*image_size)
    gen = torch.Generator().manual_seed(8 + num_classes)
    anchors = AnchorGenerator()(sizes)
    total = sum(a.shape[0] for a in anchors)
    out = {
        "cls_logits": torch.randn(2, total, num_classes, generator=gen) * 2 - 3,
        "box_deltas": torch.randn(2, total, 4, generator=gen) * 0.5,
        "anchors": anchors,
        "feature_sizes": sizes,
    }
    head = RetinaNetHead(in_channels=8, num_convs=1, num_classes=num_classes)
    ours = head.postprocess(out, [image_size] * 2, score_threshold=0.05, topk_per_level=topk,
                            nms_threshold=nms_threshold, max_detections=max_detections)
    model = tv_retinanet(num_classes, score_thresh=0.05, nms_thresh=nms_threshold,
                         detections_per_img=max_detections, topk_candidates=topk)
    ref = tv_postprocess(model, out, [image_size] * 2)
    for mine, theirs in zip(ours, ref):
        b = theirs["boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        assert 10 < b.shape[0] <= max_detections
        torch.testing.assert_close(mine["boxes"], theirs["boxes"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        assert torch.equal(mine["labels"], theirs["labels"])


def test_postprocess_drops_boxes_emptied_by_clipping():
    """Deliberate difference. A confident box decoded entirely outside the image is clipped to
    zero width; torchvision returns it (an empty box overlaps nothing, so NMS keeps it),
    posenet drops it. Everything else is the same."""
    image_size = (64, 64)
    sizes = feature_sizes_for(*image_size)
    anchors = AnchorGenerator()(sizes)
    total = sum(a.shape[0] for a in anchors)
    out = {
        "cls_logits": torch.full((1, total, 1), -10.0),
        "box_deltas": torch.zeros(1, total, 4),
        "anchors": anchors,
        "feature_sizes": sizes,
    }
    out["cls_logits"][0, [40, 300]] = torch.tensor([[6.0], [5.0]])
    out["box_deltas"][0, 40, 0] = 100.0  # centre moved 10 anchor widths to the right
    (ours,) = RetinaNetHead(in_channels=8, num_convs=1).postprocess(out, [image_size])
    (ref,) = tv_postprocess(tv_retinanet(1), out, [image_size])
    assert ref["boxes"].shape[0] == 2 and ref["boxes"][0, 0] == ref["boxes"][0, 2] == 64
    torch.testing.assert_close(ours["boxes"], ref["boxes"][1:])
    torch.testing.assert_close(ours["scores"], ref["scores"][1:])
