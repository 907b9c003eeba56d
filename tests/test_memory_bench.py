"""scripts/benchmark.py memory (posenet.bench.memory): the saved-for-backward bookkeeping
is linear in the batch and quadratic in the input side, frozen parts do not train, and the
subcommand writes a table with one row per stage, on tiny configs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posenet import families
from posenet.bench import memory as mb
from posenet.config import load_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["model.fpn_channels=16", "model.subnet_channels=16", "model.fuse_channels=16", "keypoint.input_size=64",
        "keypoint.augment=true", "detection.fpn_channels=16", "detection.head_convs=1", "prn.hidden=32"]
# 128 px: the hourglass halves the 32x32 grid four times, and batch norm needs more than one
# value per channel at B=1
TINY_OPENPOSE = ["openpose.stacks=1", "openpose.channels=16", "keypoint.input_size=128", "keypoint.augment=true"]


@pytest.fixture(scope="module")
def samples_root(tmp_path_factory) -> Path:
    return mb.write_samples(tmp_path_factory.mktemp("memory") / "data", num_images=3)


def tiny(*extra, config="synthetic_small.yaml", base=TINY):
    return load_config(REPO / "configs" / config, [*base, *extra])


def test_stages_linear_in_batch_and_frozen_trunk(samples_root):
    cfg = mb.sample_config(tiny(), samples_root)
    rows = {}
    for stage in families.of(cfg).stages:
        setup = mb.stage_setup(cfg, families.of(cfg), stage)
        samples = mb.draw_samples(setup["dataset"], 3)
        saved = mb.measure_activations(setup, samples, (1, 2, 3))
        per_image, constant = saved[2] - saved[1], 2 * saved[1] - saved[2]
        assert per_image > 0, stage
        # linearity: fp32 saves next to nothing that does not grow with the batch, so B=2 is
        # twice B=1, and a third image costs what the second did
        assert saved[2] == pytest.approx(2 * saved[1], rel=0.05), (stage, saved)
        assert saved[3] == pytest.approx(constant + 3 * per_image, rel=0.05), (stage, saved)
        rows[stage] = {**mb.parameter_bytes(setup["model"]), "per_image": per_image, "setup": setup,
                       "samples": samples}
    assert list(rows) == ["keypoint", "detection", "prn"]
    # the detection stage trains its own branch only: the trunk and keypoint branch are frozen
    assert 0 < rows["detection"]["trainable"] < rows["keypoint"]["params"]
    assert 0 < rows["prn"]["trainable"] < rows["prn"]["params"]

    # one row as the table has it: fixed = weights + gradients + Adam's two moments of the
    # trainable parameters; bf16 autocast saves less per image, plus bf16 copies of the weights
    kp = rows["keypoint"]
    row = mb.stage_row(kp["setup"], kp["samples"], ("fp32", "bf16"), 4, torch.device("cpu"))
    assert row["fixed"] == kp["weights_bytes"] + 3 * kp["trainable_bytes"]
    fp32, bf16 = row["activations"]["fp32"], row["activations"]["bf16"]
    assert fp32["per_image"] == kp["per_image"]
    assert 0 < bf16["per_image"] < 0.8 * fp32["per_image"]
    assert bf16["constant"] > 0.4 * kp["trainable_bytes"]  # the bf16 weight copies, half of fp32's bytes
    assert fp32["peak"] == row["fixed"] + fp32["saved"][1] + 3 * fp32["per_image"]

    # what is saved depends on shapes and dtypes only: skipping the convolutions' arithmetic (as
    # the table does for bf16 where the CPU emulates it) counts exactly the same bytes
    for stage in ("keypoint", "detection"):
        setup, samples = rows[stage]["setup"], rows[stage]["samples"]
        for amp in (None, "bf16"):
            assert mb.measure_activations(setup, samples, (1, 2), amp, compute=False) == \
                mb.measure_activations(setup, samples, (1, 2), amp), (stage, amp)


def test_doubling_the_input_side_quadruples_activations(samples_root):
    per_image = []
    for size in (64, 128):
        cfg = mb.sample_config(tiny(f"keypoint.input_size={size}"), samples_root)
        setup = mb.stage_setup(cfg, families.of(cfg), "keypoint")
        assert setup["input"] == f"{size}×{size}"
        saved = mb.measure_activations(setup, mb.draw_samples(setup["dataset"], 2))
        per_image.append(saved[2] - saved[1])
    assert 3 < per_image[1] / per_image[0] < 5, per_image


def test_openpose_one_stage(samples_root):
    cfg = mb.sample_config(tiny(config="openpose_synthetic_small.yaml", base=TINY_OPENPOSE), samples_root)
    result = mb.benchmark_memory(cfg, families.of(cfg), skip=["bf16"], batch=4, data_root=samples_root, log=lambda *_: None)
    (row,) = result["rows"]
    assert row["name"] == "keypoint (openpose hourglass)" and row["input"] == "128×128"
    act = row["activations"]["fp32"]
    assert "bf16" not in row["activations"] and act["per_image"] > 0
    assert act["peak"] == row["fixed"] + act["saved"][1] + 3 * act["per_image"]


def test_subcommand_writes_the_table(tmp_path):
    out = tmp_path / "memory.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "memory", "--config", "configs/synthetic_small.yaml",
         "--skip", "bf16", "--markdown-out", str(out), *TINY],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    assert [r.split(" | ")[0] for r in rows] == ["| keypoint", "| detection", "| prn"]
    assert all(" / -" in r for r in rows)  # bf16 skipped
    assert "estimated on the CPU: no GPU was used" in table and "Machine: cpu " in table
    assert "--config configs/synthetic_small.yaml --skip bf16" in table


def test_table_says_how_bf16_was_counted():
    def activations(per_image, computed=True):
        return {"per_image": per_image, "constant": 0, "peak": 10 * per_image, "saved": {1: per_image},
                "computed": computed}

    row = {"name": "keypoint", "input": "480×480", "batch": 6, "trainable": 2e6, "params": 3e6, "fixed": 1 << 20,
           "optimizer_factor": 2,
           "measured": {}, "activations": {"fp32": activations(4 << 20), "bf16": activations(5 << 20, False)}}
    result = {"rows": [row], "precisions": ["fp32", "bf16"], "device": "cpu", "seconds": 1.0,
              "channels_last": False, "frozen_bn": True}
    table = mb.format_memory_table(result, {"cpu": "x"}, "cmd")
    assert "| keypoint | 480×480 | 6 | 2.00 / 3.00 | 1.00 | 4.00 / 5.00 | 0.00 / 0.00 | 40 / 50 |" in table
    assert "bf16 without native support on this CPU: its convolutions were not computed" in table
    assert "bf16 saves more per image than fp32 in the keypoint stage: torchvision's FrozenBatchNorm2d" in table
    row["activations"]["bf16"] = activations(2 << 20)
    table = mb.format_memory_table(result, {"cpu": "x"}, "cmd")
    assert "not computed" not in table and "saves more" not in table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_cuda_measures_the_peak_beside_the_estimate(samples_root):
    cfg = mb.sample_config(tiny(), samples_root)
    result = mb.benchmark_memory(cfg, families.of(cfg), device="cuda", stages=["keypoint"], data_root=samples_root,
                                 log=lambda *_: None)
    (row,) = result["rows"]
    for precision in ("fp32", "bf16"):
        measured, estimated = row["measured"][precision], row["activations"][precision]["peak"]
        assert 0.5 * estimated < measured < 2 * estimated, (precision, measured, estimated)
    assert "max_memory_allocated" in mb.format_memory_table(result, {"gpu": "x"}, "cmd")
