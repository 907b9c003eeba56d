"""The RetinaNet person-detection subnet: head, anchor matching, losses and postprocessing.

Boxes are float ``(x1, y1, x2, y2)`` in input pixels with pixel edges at integers.

Matching (``match_anchors``): an anchor whose best IoU with a ground-truth box is at least
``positive_iou`` (0.5) is a positive of that box, below ``negative_iou`` (0.4) it is
background, in between it is ignored. Every box additionally claims the anchor(s) with its
highest IoU (when that is above 0), so that small or oddly shaped people still get a positive.
Background anchors that lie mostly inside a crowd region (intersection over anchor area at
least ``crowd_ioa``) are ignored: unannotated people may be there.

Losses (``RetinaNetHead.compute_loss``): sigmoid focal loss (alpha 0.25, gamma 2) summed
over all anchors that are not ignored, and smooth-L1 on the encoded box deltas of the
positives, both divided by the number of positive anchors in the batch (at least 1); with
``box_loss_norm="coordinates"`` the box loss is divided by four times that (the mean over the
positives' coordinates, as the original MultiPoseNet port).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from posenet.codecs.boxes import BoxCoder
from posenet.models.anchors import AnchorGenerator
from posenet.ops import batched_nms, nms

BACKGROUND = -1
IGNORED = -2


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) intersection areas of (N, 4) and (M, 4) boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) intersection over union of (N, 4) and (M, 4) boxes; 0 where both are empty."""
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), 0.0)


def box_ioa(anchors: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(A, R) intersection of each anchor with each region over the anchor's area."""
    inter = _intersection(anchors, regions)
    area = _area(anchors)[:, None]
    return torch.where(area > 0, inter / area.clamp(min=torch.finfo(inter.dtype).tiny), 0.0)


def match_anchors(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    crowd_boxes: Optional[torch.Tensor] = None,
    positive_iou: float = 0.5,
    negative_iou: float = 0.4,
    crowd_ioa: float = 0.5,
    allow_low_quality: bool = True,
) -> torch.Tensor:
    """Assigns each of the (A, 4) anchors to a ground-truth box (see the module docstring).

    Returns an (A,) int64 tensor: the index into ``gt_boxes`` for positives, ``-1``
    (``BACKGROUND``) for negatives and ``-2`` (``IGNORED``) for ignored anchors. A
    low-quality match overrides the threshold rule; an anchor that is the best one of
    several boxes goes to the box it overlaps most among those.
    """
    num_anchors = anchors.shape[0]
    matches = torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=anchors.device)
    gt_boxes = gt_boxes.reshape(-1, 4).to(anchors)
    if gt_boxes.shape[0] > 0 and num_anchors > 0:
        iou = box_iou(gt_boxes, anchors)  # (G, A)
        best_iou, best_gt = iou.max(dim=0)
        matches = torch.where(best_iou >= positive_iou, best_gt, matches)
        matches = torch.where((best_iou >= negative_iou) & (best_iou < positive_iou), IGNORED, matches)
        if allow_low_quality:
            best_per_gt = iou.max(dim=1, keepdim=True).values  # (G, 1)
            is_best = (iou == best_per_gt) & (best_per_gt > 0)  # (G, A)
            claimed = is_best.any(dim=0)
            owner = torch.where(is_best, iou, -1.0).argmax(dim=0)
            matches = torch.where(claimed, owner, matches)
    if crowd_boxes is not None and crowd_boxes.numel() > 0 and num_anchors > 0:
        in_crowd = box_ioa(anchors, crowd_boxes.reshape(-1, 4).to(anchors)).max(dim=1).values >= crowd_ioa
        matches = torch.where(in_crowd & (matches == BACKGROUND), IGNORED, matches)
    return matches


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Focal loss ``-alpha_t (1 - p_t) ** gamma log(p_t)`` of independent sigmoid outputs.

    ``targets`` (same shape as ``logits``) are in [0, 1]; ``alpha < 0`` disables the class
    weighting. The log term comes from ``binary_cross_entropy_with_logits``, so it stays
    finite for any logit. ``reduction``: "none", "mean" or "sum".
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """Classification and box-regression subnets shared across the pyramid levels P3..P7.

    Each subnet: ``num_convs`` 3x3 convs ``in_channels -> in_channels`` with ReLU, then a 3x3
    conv to ``num_anchors * num_classes`` logits (bias set so that every anchor starts with
    probability ``prior_prob``) or to ``num_anchors * 4`` box deltas. Output channel
    ``a * K + k`` is class ``k`` of anchor ``a`` (``a * 4 + j`` for the deltas).

    ``forward`` returns a dict: "cls_logits" (N, sum h*w*A, num_classes), "box_deltas"
    (N, sum h*w*A, 4), "anchors" (one (h*w*A, 4) tensor per level) and "feature_sizes";
    the flattened rows follow the anchor order of :class:`AnchorGenerator`.
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_anchors: int = 9,
        num_classes: int = 1,
        num_convs: int = 4,
        prior_prob: float = 0.01,
        box_coder: Optional[BoxCoder] = None,
        anchor_generator: Optional[AnchorGenerator] = None,
        positive_iou: float = 0.5,
        negative_iou: float = 0.4,
        crowd_ioa: float = 0.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        smooth_l1_beta: float = 1 / 9,
        box_weight: float = 1.0,
        box_loss_norm: str = "positives",
        min_box_size: float = 0.0,
        anchor_sizes: Optional[Sequence[float]] = None,
    ):
        super().__init__()
        if anchor_generator is not None and anchor_sizes is not None:
            raise ValueError("give anchor_generator or anchor_sizes, not both")
        if anchor_generator is None:
            anchor_generator = AnchorGenerator(sizes=anchor_sizes) if anchor_sizes is not None else AnchorGenerator()
        self.anchor_generator = anchor_generator
        if self.anchor_generator.num_anchors != num_anchors:
            raise ValueError(
                f"num_anchors={num_anchors} but the anchor generator has "
                f"{self.anchor_generator.num_anchors} anchors per location"
            )
        if not 0 < prior_prob < 1:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.box_coder = box_coder if box_coder is not None else BoxCoder()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.positive_iou = float(positive_iou)
        self.negative_iou = float(negative_iou)
        self.crowd_ioa = float(crowd_ioa)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.box_weight = float(box_weight)
        if box_loss_norm not in ("positives", "coordinates"):
            raise ValueError(f"box_loss_norm must be 'positives' or 'coordinates', got {box_loss_norm!r}")
        self.box_loss_norm = box_loss_norm
        # Persons whose box (geometric mean of width and height, input pixels) is smaller are
        # no targets: their best anchor overlaps them so little that a forced low-quality match
        # teaches the classifier background as person and the box branch a several-fold shrink.
        self.min_box_size = float(min_box_size)

        self.cls_tower = _tower(in_channels, num_convs)
        self.box_tower = _tower(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.box_deltas = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _flatten(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
        """(N, A * k, h, w) -> (N, h * w * A, k), rows in (y, x, anchor) order."""
        n, _, h, w = x.shape
        return x.view(n, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor)

    def forward(self, features: Sequence[torch.Tensor]) -> dict:
        feature_sizes = [tuple(f.shape[-2:]) for f in features]
        anchors = self.anchor_generator(feature_sizes, features[0].device)
        cls_logits = [self._flatten(self.cls_logits(self.cls_tower(f)), self.num_classes) for f in features]
        box_deltas = [self._flatten(self.box_deltas(self.box_tower(f)), 4) for f in features]
        return {
            "cls_logits": torch.cat(cls_logits, dim=1),
            "box_deltas": torch.cat(box_deltas, dim=1),
            "anchors": anchors,
            "feature_sizes": feature_sizes,
        }

    def compute_loss(self, outputs: Mapping, targets: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Focal and smooth-L1 losses; see the module docstring for the normalisation.

        ``targets``: "boxes", one (G_i, 4) tensor per image; optionally "crowd_boxes", one
        (C_i, 4) tensor per image, and "labels", one (G_i,) int64 tensor per image (class
        indices; all 0, the person class, when absent). Any of them may be empty.

        Returns "loss_cls", "loss_box" and "loss_detection" = loss_cls + box_weight * loss_box.
        """
        cls_logits = outputs["cls_logits"].float()
        box_deltas = outputs["box_deltas"].float()
        anchors = torch.cat(list(outputs["anchors"]), dim=0).to(box_deltas)
        boxes = targets["boxes"]
        crowds = targets.get("crowd_boxes")
        labels = targets.get("labels")
        num_images = cls_logits.shape[0]
        if len(boxes) != num_images:
            raise ValueError(f"targets['boxes'] has {len(boxes)} entries for {num_images} images")

        loss_cls = cls_logits.new_zeros(())
        loss_box = box_deltas.new_zeros(())
        num_positive = 0
        for i in range(num_images):
            gt = boxes[i].reshape(-1, 4).to(anchors)
            crowd = crowds[i] if crowds is not None else None
            if self.min_box_size > 0 and len(gt):
                # Too small to be targets; as crowd regions they still make the anchors that lie
                # mostly inside them ignored rather than background.
                wh = (gt[:, 2:] - gt[:, :2]).clamp(min=0)
                small = (wh[:, 0] * wh[:, 1]).sqrt() < self.min_box_size
                if small.any():
                    crowd = gt[small] if crowd is None else torch.cat([crowd.reshape(-1, 4).to(gt), gt[small]])
                    if labels is not None:
                        labels = [*labels[:i], labels[i][~small.to(labels[i].device)], *labels[i + 1:]]
                    gt = gt[~small]
            matches = match_anchors(
                anchors, gt, crowd, self.positive_iou, self.negative_iou, self.crowd_ioa
            )
            positive = matches >= 0
            valid = matches != IGNORED
            matched_gt = matches[positive]

            cls_target = torch.zeros_like(cls_logits[i])
            gt_class = (
                labels[i].to(device=matched_gt.device, dtype=torch.int64)[matched_gt]
                if labels is not None
                else torch.zeros_like(matched_gt)
            )
            cls_target[positive.nonzero().squeeze(1), gt_class] = 1.0
            loss_cls = loss_cls + sigmoid_focal_loss(
                cls_logits[i][valid], cls_target[valid], self.focal_alpha, self.focal_gamma, reduction="sum"
            )

            # Multiplying by 0 keeps the deltas in the graph when an image has no positives.
            if matched_gt.numel() == 0:
                loss_box = loss_box + box_deltas[i].sum() * 0.0
            else:
                target_deltas = self.box_coder.encode(gt[matched_gt], anchors[positive])
                loss_box = loss_box + F.smooth_l1_loss(
                    box_deltas[i][positive], target_deltas.to(box_deltas), beta=self.smooth_l1_beta, reduction="sum"
                )
            num_positive += int(matched_gt.numel())

        norm = max(1, num_positive)
        loss_cls = loss_cls / norm
        loss_box = loss_box / (norm if self.box_loss_norm == "positives" else 4 * norm)
        return {
            "loss_cls": loss_cls,
            "loss_box": loss_box,
            "loss_detection": loss_cls + self.box_weight * loss_box,
        }

    @torch.no_grad()
    def postprocess(
        self,
        outputs: Mapping,
        image_sizes: Sequence[Sequence[int]],
        score_threshold: float = 0.05,
        topk_per_level: int = 1000,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image from the head's outputs.

        Per level: sigmoid scores above ``score_threshold``, at most ``topk_per_level`` of
        them, decoded and clipped to the image's (height, width) from ``image_sizes``; boxes
        left empty by the clipping are dropped. Then NMS at ``nms_threshold`` over all levels
        (within each class) and the ``max_detections`` best.

        Returns per image a dict: "boxes" (D, 4), "scores" (D,) in decreasing order and
        "labels" (D,) int64 class indices (0 = person).
        """
        cls_logits = outputs["cls_logits"]
        box_deltas = outputs["box_deltas"]
        anchors = list(outputs["anchors"])
        counts = [a.shape[0] for a in anchors]
        num_classes = cls_logits.shape[-1]
        if len(image_sizes) != cls_logits.shape[0]:
            raise ValueError(f"got {len(image_sizes)} image sizes for {cls_logits.shape[0]} images")

        results = []
        for i, (height, width) in enumerate(image_sizes):
            height, width = float(height), float(width)
            level_logits = cls_logits[i].split(counts, dim=0)
            level_deltas = box_deltas[i].split(counts, dim=0)
            all_boxes, all_scores, all_labels = [], [], []
            for logits, deltas, level_anchors in zip(level_logits, level_deltas, anchors):
                scores = torch.sigmoid(logits.float()).flatten()
                candidates = (scores > score_threshold).nonzero().squeeze(1)
                scores = scores[candidates]
                if scores.numel() > topk_per_level:
                    scores, order = scores.topk(topk_per_level)
                    candidates = candidates[order]
                anchor_idx = candidates // num_classes
                boxes = self.box_coder.decode(deltas[anchor_idx], level_anchors[anchor_idx])
                all_boxes.append(boxes)
                all_scores.append(scores)
                all_labels.append(candidates % num_classes)
            boxes = torch.cat(all_boxes).float()
            scores = torch.cat(all_scores)
            labels = torch.cat(all_labels)

            boxes = torch.stack(
                [
                    boxes[:, 0].clamp(0, width),
                    boxes[:, 1].clamp(0, height),
                    boxes[:, 2].clamp(0, width),
                    boxes[:, 3].clamp(0, height),
                ],
                dim=1,
            )
            nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, labels = boxes[nonempty], scores[nonempty], labels[nonempty]

            if num_classes == 1:
                keep = nms(boxes, scores, nms_threshold)
            else:
                keep = batched_nms(boxes, scores, labels, nms_threshold)
            keep = keep[:max_detections]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results
