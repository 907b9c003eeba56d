"""Typed schema of every config key.

Each dataclass field is a key; its type is enforced when YAML files and command-line overrides
are merged, and a field left at ``MISSING`` must be set by some file or override. Fields whose
values are restricted carry ``metadata={"choices": (...)}``, except the names of registered
classes (``model.family``, ``model.backbone``, ``openpose.network``, ``infer.grouping``), which
their registry checks (``posenet.utils.registry``). ``posenet.config.build`` turns these keys
into the constructor arguments of the libraries; the classes above it read their own sections
in a ``from_config``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from posenet.data.keypoints import COCO_PERSON


def choice(default, *choices):
    return field(default=default, metadata={"choices": tuple(choices)})


@dataclass
class KeypointLayoutConfig:
    """Keypoint names, skeleton (0-based pairs), OKS sigmas; COCO-17 person by default."""

    names: List[str] = field(default_factory=lambda: list(COCO_PERSON.names))
    skeleton: List[List[int]] = field(default_factory=lambda: [list(p) for p in COCO_PERSON.skeleton])
    sigmas: List[float] = field(default_factory=lambda: list(COCO_PERSON.sigmas))
    # None: pair every ``left_*`` name with its ``right_*`` twin.
    flip_pairs: Optional[List[List[int]]] = None


@dataclass
class DataConfig:
    """Where the COCO-format dataset lives and which splits to use (docs/design.md §6)."""

    root: str = MISSING
    # The folder scheme. coco2017: ROOT/annotations/person_keypoints_{split}.json, ROOT/{split}/*.jpg
    # coco2014: also offers the splits minival2014 (first ``minival_size`` val2014 images in
    # annotation-file order) and valminusminival2014.
    folders: str = choice("coco2017", "coco2017", "coco2014")
    train_split: str = "train2017"
    val_split: str = "val2017"
    minival_size: int = 2644
    # Only the first N images of each split that hold a non-crowd person with labelled
    # keypoints (0: every image); the overfitting benchmark trains and evaluates on these.
    first_images: int = 0
    keypoints: KeypointLayoutConfig = field(default_factory=KeypointLayoutConfig)


@dataclass
class SyntheticConfig:
    """The synthetic COCO-format dataset: how many images and the generator's parameters."""

    num_train: int = 200
    num_val: int = 50
    seed: int = 0
    workers: int = 2
    min_people: int = 0
    max_people: int = 8
    min_size: int = 256
    max_size: int = 640
    # Smallest person height (px) and largest as a fraction of the image height.
    min_person_height: float = 28.0
    max_person_height: float = 1.15
    group_prob: float = 0.35
    # "random" (anywhere, group_prob groups) or "row" (side by side, one slot per person).
    placement: str = choice("random", "random", "row")
    # "any" (front, back, profile) or "front"; pose_kinds: a subset of stand, walk, run, arms_up,
    # gesture, sit, crouch, free (empty: all).
    views: str = choice("any", "any", "front")
    pose_kinds: List[str] = field(default_factory=list)
    crowd_prob: float = 0.15
    occluder_prob: float = 0.3
    unannotated_prob: float = 0.08
    # Scene difficulty: background clutter shapes, blur, sensor noise, grayscale images.
    max_clutter: int = 12
    blur_prob: float = 0.3
    noise_std: float = 4.0
    grayscale_prob: float = 0.1


@dataclass
class ModelConfig:
    """The network: the model family and, for MultiPoseNet, ``posenet.models.PoseNet``'s settings."""

    # A registered family (posenet.families.FAMILIES): "multiposenet" (keypoint subnet +
    # RetinaNet + PRN: every section below) or "openpose" (the part-affinity-field network: the
    # ``openpose`` section); every script follows it.
    family: str = "multiposenet"
    # The trunk (posenet.models.backbone.TRUNKS): "resnet" (torchvision's, of backbone_depth).
    backbone: str = "resnet"
    backbone_depth: int = choice(50, 18, 34, 50, 101, 152)
    # "none" (random initialisation), "imagenet" (torchvision's weights, from the torch hub
    # cache) or the path of a trunk state_dict file (ResNet; for openpose a VGG19 or ShuffleNetV2
    # one, or a release file, pose_model.pth / pose_model_scratch.pth, which sets every weight).
    pretrained: str = "imagenet"
    # Frozen batch-norm statistics suit pretrained trunks and small per-GPU batches; a trunk
    # trained from scratch needs them trainable.
    frozen_bn: bool = True
    trainable_layers: int = 5
    fpn_channels: int = 256
    subnet_channels: int = 128
    fuse_channels: int = 256
    intermediate_supervision: bool = True
    segmentation_weight: float = 1.0
    intermediate_weight: float = 1.0
    # Heatmap loss pixel weight 1 + foreground_weight * target (0: the paper's plain L2).
    foreground_weight: float = 0.0


@dataclass
class KeypointDataConfig:
    """Keypoint-stage samples: input size, heatmap targets and training augmentation."""

    input_size: int = 480
    sigma: float = 7.0
    scale_range: List[float] = field(default_factory=lambda: [0.8, 1.2])
    max_rotation: float = 40.0
    center_jitter: float = 40.0
    flip_prob: float = 0.5
    # Scale reference: a random person's longer box side becomes this fraction of the crop,
    # kept within zoom_limits times the scale that fits the whole image into the crop.
    person_fraction: float = 0.6
    zoom_limits: List[float] = field(default_factory=lambda: [0.5, 4.0])
    # Validation input: the longer side of each image is scaled to this.
    val_input_size: int = 480
    # false: training samples are the validation inputs themselves (fit and pad at
    # val_input_size, no augmentation), as in the overfitting benchmark.
    augment: bool = True


@dataclass
class TrainConfig:
    """The shared training engine (``posenet.engine.Trainer``)."""

    epochs: int = 60
    batch_size: int = 6
    num_workers: int = 2
    optimizer: str = choice("adam", "sgd", "adam", "adamw")
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = choice("plateau", "none", "plateau", "step", "cosine")
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    milestones: List[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.001
    min_lr_ratio: float = 0.0
    # Autocast: "auto" is bf16 where the device runs it natively (CUDA >= sm80; CPUs with
    # AVX512-BF16/AMX), fp32 elsewhere; an explicit bf16 on a CPU without it is 10-25x slower (docs/benchmarks.md).
    amp: str = choice("none", "none", "auto", "bf16", "fp16")
    channels_last: bool = False
    grad_clip: Optional[float] = None
    log_every: int = 20
    # last.pt every N epochs (and after the last, and whenever best.pt changes); mid-epoch
    # every N steps as well where checkpoint_every_steps > 0. A crash replays what came after.
    checkpoint_every: int = 1
    checkpoint_every_steps: int = 0
    eval_every: int = 1
    # The validation metric that picks best.pt, and whether larger is better.
    metric: str = "AP"
    metric_mode: str = choice("max", "min", "max")
    visualize_every: int = 200
    deterministic: bool = False


@dataclass
class DetectionConfig:
    """Stage 2: the detection FPN (P3..P7) and RetinaNet person heads (docs/design.md §2)."""

    fpn_channels: int = 256
    head_convs: int = 4
    prior_prob: float = 0.01
    # Base anchor size of P3..P7 in input pixels (the paper's 32..512); halve them for inputs
    # at which most persons are smaller than 32 px.
    anchor_sizes: List[float] = field(default_factory=lambda: [32.0, 64.0, 128.0, 256.0, 512.0])
    # Anchor matching: IoU >= positive_iou is a person, < negative_iou background, between
    # ignored; background anchors covered (intersection / anchor area) by a crowd region
    # at least crowd_ioa are ignored too.
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    crowd_ioa: float = 0.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 1.0 / 9.0
    box_weight: float = 1.0
    # The box loss's divisor: "positives" (the positive anchors of the batch; each positive's
    # four coordinates summed) or "coordinates" (four times that: the mean over the positives'
    # coordinates, as the original MultiPoseNet port). For the same box error the default is
    # 4.0x the port's and 4.8-7.2x torchvision's RetinaNet (docs/design.md, "Loss scales").
    box_loss_norm: str = choice("positives", "positives", "coordinates")
    # Persons smaller than this (input pixels, geometric mean of the box sides) are no
    # detection targets (0: every person is one).
    min_box_size: float = 0.0
    # What the detection stage leaves untouched: "trunk", "keypoint" (keypoint FPN + subnet).
    freeze: List[str] = field(default_factory=lambda: ["trunk", "keypoint"])
    # Training overrides for this stage (null: the train section's value).
    epochs: Optional[int] = None
    lr: Optional[float] = None
    # Post-processing: score threshold, candidates per level, NMS IoU, detections per image.
    score_threshold: float = 0.05
    topk_per_level: int = 1000
    nms_threshold: float = 0.5
    max_detections: int = 100


@dataclass
class PrnConfig:
    """Stage 3: the Pose Residual Network (docs/design.md §2), trained on annotations alone."""

    # The per-box grid: height x width cells for each keypoint type.
    height: int = 56
    width: int = 36
    # Boxes are enlarged by this fraction per side before the grid is laid over them.
    box_margin: float = 0.21
    # "enlarged": the grid covers the enlarged box, its input blur a Gaussian of centre weight 1
    # cut at 3 sigma; "reference" (the PRN reference code's): the grid covers the box itself,
    # the keypoints of the margin are clamped onto its border cells, and the blur is normalised,
    # cut at 4 sigma, replicating the edge (docs/design.md, "The PRN's grid").
    grid: str = choice("enlarged", "enlarged", "reference")
    hidden: int = 1024
    # A second hidden layer of this width (0: none).
    second_hidden: int = 0
    dropout: float = 0.5
    # "channel": a softmax per keypoint channel (the paper); "global": one over the whole grid.
    softmax: str = choice("channel", "channel", "global")
    # Gaussian blur (grid cells) of the input peaks and of the target keypoints.
    input_sigma: float = 1.0
    target_sigma: float = 2.0
    # Training persons: non-crowd persons with at least this many labelled keypoints.
    min_keypoints: int = 4
    # Training scenes: real poses of data.train_split, re-placed at random scales and
    # positions into crowded scenes of min_people..max_people persons, samples_per_epoch boxes.
    samples_per_epoch: int = 20000
    min_people: int = 2
    max_people: int = 12
    # Training overrides for this stage (null: the train section's value).
    epochs: Optional[int] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    # Grouping: a peak's PRN score is the PRN output summed in a window of this many cells.
    window: int = 15
    # The grouping's output layer: int8 or float32 on just the channels that can change the
    # assignment (posenet/inference/prn_fast.py), or exact (every channel, dense float32).
    precision: str = choice("int8", "int8", "float32", "exact")
    # What a heatmap peak writes into its PRN input cell at inference: 1, as the training
    # inputs (ground-truth keypoints) hold, the pair then scored by the window sum times the
    # peak's score (the reference code's rule), or its score (end to end AP 0.731 vs 0.726 on
    # the quickstart, 0.813 vs 0.784 on the 16-image overfit: docs/design.md).
    peak_input: str = choice("one", "score", "one")


@dataclass
class InferConfig:
    """The inference pipeline (``posenet.inference.Predictor``, infer.py, end-to-end validation)."""

    # Image side at scale 1 (0: keypoint.val_input_size), and which side it is: the longer
    # (posenet's rule: the image fits a square of input_size), the height (the CMU OpenPose
    # release) or the shorter (its PyTorch port). docs/inference.md names each config's rule.
    input_size: int = 0
    input_side: str = choice("longer", "longer", "height", "shorter")
    # Heatmaps averaged over these scales on the grid of the listed scale nearest 1 (the
    # reference scale), whose boxes are kept; the order of the list changes nothing.
    scales: List[float] = field(default_factory=lambda: [1.0])
    # MultiPoseNet's person boxes with several scales: the reference scale's ("reference") or
    # every scale's, mapped onto the reference input and merged by NMS ("all"; docs/inference.md).
    boxes: str = choice("reference", "reference", "all")
    flip: bool = False
    # Heatmap peaks: minimum value and most peaks per keypoint type.
    peak_threshold: float = 0.05
    max_peaks: int = 20
    # Person boxes kept for grouping: minimum score, and a factor that scales them about
    # their centres before grouping.
    box_threshold: float = 0.3
    box_scale: float = 1.0
    # MultiPoseNet's grouping of peaks into boxes, one of posenet.inference.groupings.GROUPINGS
    # ("prn", "greedy"; the OpenPose family always groups with "paf"); an unknown name is refused
    # by the registry, naming the registered ones.
    grouping: str = "prn"
    # Keypoints below this score do not count towards the pose score.
    keypoint_threshold: float = 0.05
    # Pictures (infer.py, the quickstart) draw the people whose box score reaches this; the
    # results files keep every person above box_threshold.
    picture_box_threshold: float = 0.5
    # Speed, results unchanged (scripts/benchmark.py network): batch norm folded into the
    # convolutions of a loaded model (never the one being trained), channels_last input.
    fold_batchnorm: bool = True
    channels_last: bool = True


@dataclass
class EvalConfig:
    """Validation: batch size, flip test, and the grouping of keypoints into people."""

    batch_size: int = 4
    flip: bool = False
    # Ground-truth boxes are enlarged by this fraction per side before keypoints are taken.
    box_margin: float = 0.1
    # Overlapping boxes: hand each heatmap peak to one box only, preferring the box it is more
    # central in (centrality 0: by heatmap value alone); see inference.keypoints_in_boxes.
    exclusive_peaks: bool = True
    box_centrality: float = 1.0
    # Keypoints below this heatmap value count as not found (confidence 0 in the results).
    keypoint_threshold: float = 0.05
    # Evaluate at most this many validation images (0: all).
    max_images: int = 0


@dataclass
class OpenPoseConfig:
    """The OpenPose family (``model.family: openpose``, docs/design.md §7): network, targets
    and the PAF grouping. Input sizes: ``keypoint.input_size`` / ``val_input_size``; heatmap
    sigma: ``keypoint.sigma``; peaks: ``infer.peak_threshold`` / ``max_peaks``."""

    # A registered network (posenet.models.paf_networks.PAF_NETWORKS; its options are keys of
    # this section): "vgg19" (the release: VGG19 trunk, `stages` two-branch stages), "shufflenetv2"
    # (torchvision's, stride 8, one stage), "hourglass" (`stacks` stacks of `channels`, stride
    # 4) or "resnet_fpn" (MultiPoseNet's keypoint network: a ResNet of `resnet_depth`, a feature
    # pyramid and fusion of `channels`, stride 4, one stage).
    network: str = "vgg19"
    stages: int = 6
    shufflenet_width: str = choice("x1_0", "x0_5", "x1_0", "x1_5", "x2_0")
    stacks: int = 8
    channels: int = 256
    resnet_depth: int = choice(50, 18, 34, 50, 101, 152)
    # Input preprocessing: "imagenet" (RGB / 255, ImageNet mean and std) or "caffe" (BGR,
    # x / 256 - 0.5: the Caffe release's); a release file sets its own.
    preprocessing: str = choice("imagenet", "imagenet", "caffe")
    # PAF targets: cells within this many cells of a limb's segment hold its direction.
    limb_width: float = 1.0
    # Loss weight of a cell 1 + foreground_weight * |target| for parts and PAFs (0: the
    # release's plain masked L2; see PafNetwork.compute_loss).
    foreground_weight: float = 0.0
    # Grouping: PAF samples per candidate pair; a pair needs more than min_inliers of them
    # above paf_threshold; people need min_parts parts and a mean score of min_mean_score.
    # paf_sampling: how a sample reads the PAF: "bilinear" (between the four cells around the
    # point: robust to fields whose grid is offset or whose limbs are one cell wide, as the
    # release's; docs/openpose.md) or "nearest" (the nearest cell's value, as versions before
    # this option read it).
    paf_sampling: str = choice("bilinear", "bilinear", "nearest")
    paf_samples: int = 10
    paf_threshold: float = 0.05
    min_inliers: float = 0.8
    min_parts: int = 3
    min_mean_score: float = 0.2


@dataclass
class VideoConfig:
    """People across the frames of a video (scripts/video.py; ``posenet.portable.tracking.Tracker``
    reads this section in its ``from_config``; docs/video.md)."""

    # A track id per person that persists across frames (off: people coloured by their order).
    track: bool = True
    # A track outlives this many frames in a row without a match (then its id ends; ids are
    # never reused).
    max_missed: int = 10
    # A person and a track match at or above this OKS (the layout's sigmas, the track's box as
    # the area), or, where fewer than min_keypoints keypoints are found in both, at or above
    # this box IoU; one-to-one, best first.
    oks_threshold: float = 0.2
    iou_threshold: float = 0.2
    min_keypoints: int = 4
    # Compare a track's pose moved on at its velocity (the mean step of its keypoints between
    # matches) for the frames since it was seen, not where it was seen.
    motion: bool = True
    # One-Euro smoothing of each track's keypoints, after the matching: min_cutoff (Hz) the
    # cutoff of a still keypoint (lower: less jitter), beta how fast the cutoff rises with
    # speed (higher: less lag). A keypoint that is not found restarts its filter.
    smooth: bool = False
    min_cutoff: float = 1.0
    beta: float = 0.05


@dataclass
class PosenetConfig:
    name: str = "posenet"
    # Every run writes its outputs, and its resolved config, under this folder.
    output_dir: str = "runs/${name}"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    keypoint: KeypointDataConfig = field(default_factory=KeypointDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    prn: PrnConfig = field(default_factory=PrnConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    openpose: OpenPoseConfig = field(default_factory=OpenPoseConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
