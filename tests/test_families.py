"""A model family is one object that names its pieces in every layer: each piece it names fits
the others (network, targets, predictor, grouping, export graph, decode benchmark, docs blocks),
and a family added the documented way is asked, not branched on."""
import importlib

import pytest

from posenet import families
from posenet.bench.common import GENERATED_BLOCKS
from posenet.config import build, load_config
from posenet.deploy.export import GRAPHS, graph_class
from posenet.errors import ConfigError
from _scripts import REPO

CONFIGS = {"multiposenet": REPO / "configs/synthetic_small.yaml",
           "openpose": REPO / "configs/openpose_synthetic_small.yaml"}
SMALL = {"multiposenet": ["model.pretrained=none", "model.backbone_depth=18"],
         "openpose": ["openpose.network=hourglass", "openpose.stacks=1", "openpose.channels=16"]}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_piece_a_family_names_fits_the_others(name, tiny_synthetic):
    cfg = load_config(CONFIGS[name], [*SMALL[name], f"data.root={tiny_synthetic}", "keypoint.input_size=64",
                                      "keypoint.augment=false", "keypoint.val_input_size=64", "infer.input_size=64"])
    family = families.of(cfg)
    assert family.name == name and isinstance(family, families.FAMILIES[name])
    network = family.network(cfg)
    assert isinstance(network, family.export_graph.model_class)
    assert family.export_graph is graph_class(name) and family.export_graph in GRAPHS
    assert family.predictor_class is family.export_graph.predictor_class
    # the targets the family's network trains on: its loss accepts them
    sample = build.keypoint_dataset(cfg, cfg.data.train_split, train=True, **family.targets(cfg))[0][1]
    if "pafs" in sample:
        assert sample["heatmaps"].shape[0] == network.num_parts + 1 and sample["pafs"].shape[0] == 2 * network.num_limbs
    else:
        assert sample["heatmaps"].shape[0] == len(cfg.data.keypoints.names)
    # its predictor holds a grouping of the registry, a bottom-up one exactly for the PAF family
    full = (build.posenet_model(cfg, len(cfg.data.keypoints.names), detection=True, prn=True)
            if "prn" in family.stages else network)  # every stage's part
    predictor = family.predictor_class.from_config(cfg, full)
    assert predictor.grouping.bottom_up == (name == "openpose")
    # its decode benchmark is a module of posenet.bench with the common entry point
    assert callable(importlib.import_module(f"posenet.bench.{family.decode_benchmark}").run)
    for kind in ("quickstart", "overfit", "decode"):
        assert family.block(kind) in GENERATED_BLOCKS
    assert set(family.proof_aims) <= set(family.proof_metrics) and "end_to_end_ap" in family.proof_aims
    assert family.stages[0] == "keypoint" and "auto" in family.modes


def test_a_family_registered_the_documented_way_is_asked_by_name():
    @families.FAMILIES.register("toy-family-test")
    class Toy(families.OpenPoseFamily):
        stages = ("keypoint",)

    try:
        cfg = load_config(CONFIGS["openpose"])
        cfg.model.family = "toy-family-test"
        family = families.of(cfg)
        assert isinstance(family, Toy) and family.block("overfit") == "overfit-toy-family-test"
        with pytest.raises(ConfigError, match="model.family toy-family-test has no prn stage"):
            family.check_stage("prn")
    finally:
        families.FAMILIES.unregister("toy-family-test")
    with pytest.raises(ConfigError, match="unknown model.family 'toy-family-test'; choose one of multiposenet, openpose"):
        families.FAMILIES["toy-family-test"]
