"""The one place where config keys become constructor arguments.

Every component can also be built from plain Python with the same keywords; these functions
only translate a validated config section into those keywords.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from posenet.data.coco import CocoPersons
from posenet.data.dataset import CocoKeypointDataset
from posenet.data.keypoints import KeypointLayout, OPENPOSE_18
from posenet.data.prn_samples import PrnSceneDataset
from posenet.data.synthetic import SyntheticCocoGenerator
from posenet.engine import Trainer, checkpoint as ckpt
from posenet.engine.schedules import build_optimizer
from posenet.config.loader import load_config
from posenet.errors import ConfigError
from posenet.models import PoseNet
from posenet.models.backbone import TRUNKS
from posenet.models.openpose import is_release_state, load_release_weights
from posenet.models.paf_networks import PAF_NETWORKS
from posenet.utils.io import RUN_CONFIG_NAME
from posenet.models.posenet import PARTS
from posenet.models.prn import PoseResidualNetwork
from posenet.models.retinanet import RetinaNetHead


def keypoint_layout(cfg: DictConfig) -> KeypointLayout:
    """``data.keypoints`` → :class:`KeypointLayout`."""
    try:
        return KeypointLayout.from_names(
            names=list(cfg.names),
            skeleton=[list(p) for p in cfg.skeleton],
            sigmas=list(cfg.sigmas),
            flip_pairs=None if cfg.flip_pairs is None else [list(p) for p in cfg.flip_pairs],
        )
    except ValueError as e:
        raise ConfigError(f"data.keypoints: {e}") from None


def coco_split(cfg: DictConfig, split: str) -> CocoPersons:
    """``data`` → the annotations of one split."""
    return CocoPersons(cfg.root, split, folders=cfg.folders, minival_size=cfg.minival_size,
                       first_images=cfg.first_images)


def synthetic_generator(cfg: DictConfig):
    """``synthetic`` → the synthetic dataset generator (image counts and seed stay with the caller)."""

    return SyntheticCocoGenerator(
        min_people=cfg.min_people,
        max_people=cfg.max_people,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        min_person_height=cfg.min_person_height,
        max_person_height=cfg.max_person_height,
        group_prob=cfg.group_prob,
        placement=cfg.placement,
        views=cfg.views,
        pose_kinds=list(cfg.pose_kinds) or None,
        crowd_prob=cfg.crowd_prob,
        occluder_prob=cfg.occluder_prob,
        unannotated_prob=cfg.unannotated_prob,
        max_clutter=cfg.max_clutter,
        blur_prob=cfg.blur_prob,
        noise_std=cfg.noise_std,
        grayscale_prob=cfg.grayscale_prob,
    )


def posenet_model(cfg: DictConfig, num_keypoints: int, detection: bool = False, prn: bool = False):
    """``model`` (+ ``detection`` with the detection branch, + ``prn`` with the PRN) →
    :class:`posenet.models.PoseNet`."""

    m = cfg.model
    return PoseNet(
        num_keypoints=num_keypoints,
        trunk=trunk(cfg),
        fpn_channels=m.fpn_channels,
        subnet_channels=m.subnet_channels,
        fuse_channels=m.fuse_channels,
        intermediate_supervision=m.intermediate_supervision,
        segmentation_weight=m.segmentation_weight,
        intermediate_weight=m.intermediate_weight,
        foreground_weight=m.foreground_weight,
        detection_head=detection_head(cfg) if detection else None,
        detection_fpn_channels=cfg.detection.fpn_channels,
        prn=pose_residual_network(cfg, num_keypoints) if prn else None,
    )


def trunk(cfg: DictConfig):
    """``model.backbone`` and its settings → a registered trunk (``posenet.models.backbone``)."""

    m = cfg.model
    return TRUNKS[m.backbone](**TRUNKS.keywords(m.backbone, m))


def detection_head(cfg: DictConfig):
    """``detection`` → :class:`posenet.models.retinanet.RetinaNetHead` on the detection FPN."""

    d = cfg.detection
    return RetinaNetHead(
        in_channels=d.fpn_channels,
        num_convs=d.head_convs,
        anchor_sizes=list(d.anchor_sizes),
        prior_prob=d.prior_prob,
        positive_iou=d.positive_iou,
        negative_iou=d.negative_iou,
        crowd_ioa=d.crowd_ioa,
        focal_alpha=d.focal_alpha,
        focal_gamma=d.focal_gamma,
        smooth_l1_beta=d.smooth_l1_beta,
        box_weight=d.box_weight,
        box_loss_norm=d.box_loss_norm,
        min_box_size=d.min_box_size,
    )


def pose_residual_network(cfg: DictConfig, num_keypoints: int):
    """``prn`` → :class:`posenet.models.prn.PoseResidualNetwork`."""

    p = cfg.prn
    return PoseResidualNetwork(num_keypoints=num_keypoints, height=p.height, width=p.width, hidden=p.hidden,
                               second_hidden=p.second_hidden, dropout=p.dropout, softmax=p.softmax)


# What to do when a checkpoint lacks a part that is asked for.
_MISSING_PART = {
    "detection": "it is a keypoint-stage checkpoint; train the detection stage on it first "
                 "(scripts/train_detection.py --init {checkpoint})",
    "prn": "train the PRN stage on it first (scripts/train_prn.py --init {checkpoint})",
}
_PART_NAMES = {"detection": "detection branch", "prn": "PRN"}


def checkpoint_state(checkpoint, cfg: DictConfig | None = None) -> dict:
    """The model weights stored in ``checkpoint`` (a clear error for an unreadable file, and for
    a file of the OpenPose release, which only ``paf_network_from_checkpoint`` reads; ``cfg``:
    the config it was given with, which the error names)."""

    stored = ckpt.load_checkpoint(checkpoint)
    if is_release_state(stored):
        raise ConfigError(release_config_error(checkpoint, cfg))
    return dict(ckpt.model_state_of(stored))


# The config that runs the OpenPose release's weights.
RELEASE_CONFIG = "configs/openpose_vgg19.yaml"


def release_config_error(checkpoint, cfg: DictConfig | None = None) -> str:
    """What to do with a file of the OpenPose release under another config (one line)."""
    wrong = ""
    if cfg is not None:
        wrong = f", not model.family {cfg.model.family}"
        if cfg.model.family == "openpose":
            wrong = f", not openpose.network {cfg.openpose.network}"
    return (f"{checkpoint} holds the OpenPose release's weights (pose_model.pth): they run with model.family "
            f"openpose and openpose.network vgg19{wrong}; pass --config {RELEASE_CONFIG}")


def release_model(cfg: DictConfig, state, source):
    """The network of ``cfg`` (model.family openpose, openpose.network vgg19) with the OpenPose
    release's weights ``state`` (read from ``source``) and the preprocessing that goes with them
    (``models.openpose.load_release_weights``)."""
    from omegaconf import OmegaConf

    if cfg.model.family != "openpose" or cfg.openpose.network != "vgg19":
        raise ConfigError(release_config_error(source, cfg))
    model = paf_network(OmegaConf.merge(cfg, {"model": {"pretrained": "none"}}))
    load_release_weights(model, state, source=source)
    return model


def paf_network_from_checkpoint(cfg: DictConfig, checkpoint, device="cpu"):
    """The PAF network of ``cfg`` with the weights of ``checkpoint`` (a training checkpoint, or
    a file of the OpenPose release, ``pose_model.pth`` / ``pose_model_scratch.pth``, which loads
    into an openpose vgg19 config's network: ``release_model``), in eval mode on ``device``."""
    from omegaconf import OmegaConf

    stored = ckpt.load_checkpoint(checkpoint)
    if is_release_state(stored):
        return release_model(cfg, stored, checkpoint).to(device).eval()
    model = paf_network(OmegaConf.merge(cfg, {"model": {"pretrained": "none"}}))
    ckpt.load_model_state(model, dict(ckpt.model_state_of(stored)), checkpoint)
    return model.to(device).eval()


def posenet_from_checkpoint(cfg: DictConfig, checkpoint, device="cpu", require: tuple = ()):
    """The MultiPoseNet model of ``cfg`` with every part ``checkpoint`` holds (one checkpoint
    format across stages), its weights loaded, in eval mode on ``device``. A part in
    ``require`` that the checkpoint lacks is one clear error saying which stage makes it; a file
    of the OpenPose release is one clear error naming the config it needs."""
    from omegaconf import OmegaConf

    state = checkpoint_state(checkpoint, cfg)
    parts = PoseNet.parts_in(state)
    for part in require:
        if part not in parts:
            raise ConfigError(f"{checkpoint} has no {_PART_NAMES[part]}: "
                              + _MISSING_PART[part].format(checkpoint=checkpoint))
    model = posenet_model(OmegaConf.merge(cfg, {"model": {"pretrained": "none"}}), len(cfg.data.keypoints.names),
                          detection="detection" in parts, prn="prn" in parts)
    ckpt.load_model_state(model, state, checkpoint)
    return model.to(device).eval()


def load_earlier_stage(model, checkpoint, new_part: str) -> None:
    """Load an earlier stage's ``checkpoint`` into ``model``: every part must fit, except that
    ``new_part`` keeps its fresh weights where the checkpoint has none."""

    state = checkpoint_state(checkpoint)
    prefixes = tuple(f"{name}." for name in PARTS[new_part])
    for key, value in model.state_dict().items():
        if key.startswith(prefixes):
            state.setdefault(key, value)
    ckpt.load_model_state(model, state, checkpoint)


def stage_config(cfg: DictConfig, section: str) -> DictConfig:
    """``cfg`` with a stage's training overrides (``SECTION.epochs``, ``.lr``, ``.batch_size``,
    where the section has them and they are not null) applied to ``train``."""
    from omegaconf import OmegaConf

    keys = [k for k in ("epochs", "lr", "batch_size") if k in cfg[section] and cfg[section][k] is not None]
    return OmegaConf.merge(cfg, {"train": {k: cfg[section][k] for k in keys}}) if keys else cfg


def detection_options(cfg: DictConfig) -> dict:
    """``detection`` → the post-processing keywords of ``PoseNet.detect``."""
    d = cfg.detection
    return dict(score_threshold=d.score_threshold, topk_per_level=d.topk_per_level,
                nms_threshold=d.nms_threshold, max_detections=d.max_detections)


def paf_targets(cfg: DictConfig) -> dict:
    """``openpose`` → the ``keypoint_dataset`` keywords of the OpenPose family's targets: the
    network's parts on its grid, a background channel and the PAFs."""
    return dict(stride=paf_network_class(cfg).output_stride, parts=openpose_parts(cfg), background=True,
                paf_limb_width=cfg.openpose.limb_width)


def keypoint_dataset(cfg: DictConfig, split: str, train: bool, **targets):
    """``data`` + ``keypoint`` → :class:`posenet.data.dataset.CocoKeypointDataset` of a split;
    ``targets``: a model family's other targets (``paf_targets``; default MultiPoseNet's
    keypoint heatmaps and segmentation)."""

    k = cfg.keypoint
    layout = keypoint_layout(cfg.data.keypoints)
    persons = same_keypoints(coco_split(cfg.data, split), layout)
    augment = train and k.augment  # keypoint.augment false: train on the validation inputs
    size = k.input_size if augment else k.val_input_size
    return CocoKeypointDataset(
        persons,
        input_size=(size, size),
        train=augment,
        layout=layout,
        sigma=k.sigma,
        scale_range=tuple(k.scale_range),
        max_rotation=k.max_rotation,
        center_jitter=k.center_jitter,
        flip_prob=k.flip_prob,
        person_fraction=k.person_fraction,
        zoom_limits=tuple(k.zoom_limits),
        **targets,
    )


def same_keypoints(persons: CocoPersons, layout: KeypointLayout) -> CocoPersons:
    """``persons``, or one clear error where its annotation file names other keypoints than
    ``data.keypoints.names``."""
    if persons.keypoint_layout.names != layout.names:
        raise ConfigError(
            f"{persons.files.annotation_file}: its keypoints ({', '.join(persons.keypoint_layout.names)}) "
            f"differ from data.keypoints.names"
        )
    return persons


def validation_inputs(cfg: DictConfig, dataset=None):
    """``dataset``, or the validation inputs of ``data.val_split``."""
    return dataset if dataset is not None else keypoint_dataset(cfg, cfg.data.val_split, train=False)


def evaluation_loader(cfg: DictConfig) -> dict:
    """``eval`` (+ ``train.num_workers``) → the loader keywords of a ``DatasetEvaluator``."""
    return dict(batch_size=cfg.eval.batch_size, num_workers=cfg.train.num_workers, max_images=cfg.eval.max_images)


def prn_scenes(cfg: DictConfig, persons: CocoPersons | None = None):
    """``prn`` + ``data`` + ``seed`` → :class:`posenet.data.prn_samples.PrnSceneDataset`, the
    PRN's training scenes of ``persons`` (default: ``data.train_split``), new scenes every epoch."""

    p = cfg.prn
    layout = keypoint_layout(cfg.data.keypoints)
    persons = same_keypoints(persons if persons is not None else coco_split(cfg.data, cfg.data.train_split), layout)
    return PrnSceneDataset(persons, samples_per_epoch=p.samples_per_epoch, min_people=p.min_people,
                           max_people=p.max_people, min_keypoints=p.min_keypoints, margin=p.box_margin,
                           height=p.height, width=p.width, input_sigma=p.input_sigma, target_sigma=p.target_sigma,
                           flip_index=layout.flip_index, seed=cfg.seed, fresh_each_epoch=True, grid=p.grid)


def trainer(cfg: DictConfig, **parts):
    """``train`` (+ the resolved ``cfg``, saved in the run directory) → a
    :class:`posenet.engine.Trainer` of ``parts`` (model, train_dataset, collate_fn, evaluate,
    visualize, out_dir, resume)."""
    from omegaconf import OmegaConf

    return Trainer(config=OmegaConf.to_container(cfg, resolve=True), **parts, **trainer_options(cfg))


def trainer_options(cfg: DictConfig) -> dict:
    """``train`` → the keyword arguments of :class:`posenet.engine.Trainer` (and its optimizer
    and schedule) that come from the config."""
    from functools import partial

    t = cfg.train
    schedule_kw = {
        "plateau": dict(factor=t.plateau_factor, patience=t.plateau_patience),
        "step": dict(milestones=list(t.milestones), gamma=t.gamma),
        "cosine": dict(warmup_epochs=t.warmup_epochs, warmup_factor=t.warmup_factor, min_lr_ratio=t.min_lr_ratio),
        "none": {},
    }[t.schedule]
    return dict(
        optimizer=partial(build_optimizer, t.optimizer, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum),
        epochs=t.epochs,
        batch_size=t.batch_size,
        num_workers=t.num_workers,
        scheduler=t.schedule,
        scheduler_kw=schedule_kw,
        amp=None if t.amp == "none" else t.amp,
        channels_last=t.channels_last,
        grad_clip=t.grad_clip,
        log_every=t.log_every,
        checkpoint_every=t.checkpoint_every,
        checkpoint_every_steps=t.checkpoint_every_steps,
        eval_every=t.eval_every,
        metric=t.metric,
        metric_mode=t.metric_mode,
        visualize_every=t.visualize_every,
        deterministic=t.deterministic,
        seed=cfg.seed,
    )


# --------------------------------------------------------------------------- the OpenPose family


def openpose_parts(cfg: DictConfig):
    """The OpenPose family's parts: its 18 (COCO's 17 and the neck, a ``DerivedLayout``) from
    ``data.keypoints``, which must be COCO's 17 person keypoints."""

    layout = keypoint_layout(cfg.data.keypoints)
    if layout.names != OPENPOSE_18.source.names:
        raise ConfigError("model.family openpose derives its 18 parts from COCO's 17 person keypoints: "
                          "data.keypoints.names must be COCO's")
    return OPENPOSE_18


def paf_network_class(cfg: DictConfig):
    """``openpose.network`` → its class (``posenet.models.paf_networks.PAF_NETWORKS``)."""

    name = cfg.openpose.network
    return PAF_NETWORKS[name]


def paf_network(cfg: DictConfig):
    """``openpose`` + ``model.pretrained`` → the PAF network. ``model.pretrained`` may be
    "none", "imagenet" (the trunk's torchvision weights), a trunk state_dict file, or a file of
    the original release (``pose_model.pth`` / ``pose_model_scratch.pth``, vgg19 only), which
    sets every weight and the preprocessing that goes with it."""
    o = cfg.openpose
    parts = openpose_parts(cfg).layout
    cls = paf_network_class(cfg)
    options = PAF_NETWORKS.keywords(o.network, o)
    pretrained = str(cfg.model.pretrained)
    release = release_weights(pretrained) if o.network == "vgg19" else None
    if "pretrained" in inspect.signature(cls).parameters:  # the networks with torchvision trunks
        options["pretrained"] = "none" if release is not None else pretrained
    elif pretrained != "none":
        raise ConfigError(f"openpose.network {o.network} has no pretrained weights: set model.pretrained none")
    model = cls(num_parts=parts.num_keypoints, num_limbs=len(parts.skeleton), preprocessing=o.preprocessing,
                foreground_weight=o.foreground_weight, **options)
    if release is not None:

        load_release_weights(model, release, source=pretrained)
    return model


def release_weights(pretrained: str):
    """The state dict of ``pretrained`` when it is a file of the OpenPose release (keys
    ``model0.0.weight``, perhaps under ``module.``: ``models.openpose.is_release_state``), else None."""

    import torch

    if pretrained in ("none", "imagenet") or not os.path.isfile(pretrained):
        return None
    try:
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not ours to judge here: the trunk loader reports it
        return None
    return state if is_release_state(state) else None


def run_config(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
               overrides: Sequence[str] = ()) -> DictConfig:
    """The config of ``checkpoint``'s run: ``config`` (default: the ``config.yaml`` of the
    checkpoint's run directory) with ``overrides``. A file of the OpenPose release has no run
    directory: it needs ``config``, one with model.family openpose and openpose.network vgg19
    (configs/openpose_vgg19.yaml)."""
    checkpoint = Path(checkpoint)
    given = bool(config)
    config = Path(config) if config else checkpoint.parent / RUN_CONFIG_NAME
    if not config.is_file():
        if not given and checkpoint.is_file() and release_weights(str(checkpoint)) is not None:
            raise ConfigError(release_config_error(checkpoint))
        raise ConfigError(f"no config for {checkpoint}: {config} does not exist; pass --config FILE")
    return load_config(config, list(overrides))
