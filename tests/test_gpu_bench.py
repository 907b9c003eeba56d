"""scripts/benchmark.py gpu (posenet.bench.gpu): the whole command path on the CPU with tiny
settings (every part's section in gpu.json and gpu.md), a failing or overrunning part recorded
while the next one runs, the budget, pytest's counts, and one clear line without a GPU."""
import json

import pytest
import torch

from posenet.bench import gpu
from posenet.bench.common import update_generated_block
from _scripts import run_script

pytestmark = pytest.mark.usefixtures("single_thread")


def test_quick_run_on_the_cpu_writes_every_part(tmp_path):
    out = tmp_path / "out"
    result = run_script("benchmark.py", "gpu", "--device", "cpu", "--quick", "--data-root", "synthetic",
                        "--out", out, "--markdown-out", tmp_path / "table.md")
    data = json.loads((out / "gpu.json").read_text())
    parts = data["parts"]
    assert list(parts) == list(gpu.PARTS)
    for name in ("build", "cuda-tests"):  # need a GPU: skipped, and said why
        assert parts[name]["status"] == "skipped" and "no GPU" in parts[name]["reason"]
    for name in ("train", "inference-multiposenet", "inference-openpose", "decode"):
        assert parts[name]["status"] == "ok", (name, parts[name].get("traceback"))

    train = parts["train"]["result"]
    assert "synthetic images" in train["data"]  # said in the table too
    assert train["batch_size"] == 2 and train["channels_last"]
    for phase in ("loader", "held_batch"):
        assert train[phase]["steps"] == train[phase]["asked"] and train[phase]["samples_per_s"] > 0

    precisions = ["fp32", "bf16"] if gpu.native_bf16("cpu") else ["fp32"]
    for name in ("inference-multiposenet", "inference-openpose"):
        r = parts[name]["result"]
        assert [(row["precision"], row["batch"]) for row in r["rows"]] == [(p, b) for p in precisions for b in (1, 2)]
        assert all(row["median_ms"] > 0 and row["images_per_s"] > 0 for row in r["rows"]), r["rows"]
        assert r["predictor"]["median_ms"] > 0
        if "bf16" in precisions:  # bf16 autocast gives nearly the fp32 heatmaps
            assert r["bf16_relative_diff"] < 0.05

    decode = parts["decode"]["result"]
    assert decode["multiposenet"]["peak_count"] == 4 * 17 and decode["multiposenet"]["found"] == 4
    assert decode["openpose"]["peak_count"] == 4 * 18 and decode["openpose"]["recovered"] == 4

    table = (out / "gpu.md").read_text()
    assert table == gpu.format_table(data) == (tmp_path / "table.md").read_text()
    for heading in ("#### Training", "#### Inference at 64 px, MultiPoseNet", "#### Inference at 64 px, OpenPose",
                    "#### Decoding per image on the CPU"):
        assert heading in table
    assert "synthetic images" in table and "| build | skipped |" in table
    assert "gpu.json" in result.stdout

    # the table again from the JSON alone (a GPU machine's, copied back); a CPU run never goes into the docs
    run_script("benchmark.py", "gpu", "--from-json", out / "gpu.json", "--markdown-out", tmp_path / "again.md")
    assert (tmp_path / "again.md").read_text() == table
    refused = run_script("benchmark.py", "gpu", "--from-json", out / "gpu.json", "--update-readme", check=False)
    assert refused.returncode == 2 and "needs a GPU run" in refused.stderr


def test_a_failing_part_is_recorded_and_the_next_part_runs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen = {}

    def failing(run, deadline):
        # the run's record says this part is running before it starts: a run killed here leaves that
        seen["status"] = json.loads((out / "gpu.json").read_text())["parts"]["train"]["status"]
        raise RuntimeError("the data loader died")

    def overrunning(run, deadline):
        raise gpu.PartTimeout("still running after 60 s")

    monkeypatch.setitem(gpu.PARTS, "train", failing)
    monkeypatch.setitem(gpu.PARTS, "inference-multiposenet", overrunning)
    result = gpu.run_check(gpu.quick_settings(data_root="synthetic"), out,
                           parts=["train", "inference-multiposenet", "decode"], log=lambda line: None)
    parts = json.loads((out / "gpu.json").read_text())["parts"]
    assert seen["status"] == "running"
    assert parts["train"]["status"] == "failed"
    assert parts["train"]["error"] == "RuntimeError: the data loader died"
    assert "the data loader died" in parts["train"]["traceback"]
    assert parts["inference-multiposenet"]["status"] == "timeout"
    assert parts["decode"]["status"] == "ok" and parts["decode"]["result"]["openpose"]["recovered"] == 4
    table = (out / "gpu.md").read_text()
    assert "| training | failed |" in table and "RuntimeError: the data loader died" in table
    assert "| inference, MultiPoseNet | timeout |" in table and "#### Decoding per image on the CPU" in table
    assert "#### Training" not in table  # no section of numbers for a part that has none
    assert result["parts"] == parts


def test_a_spent_budget_skips_the_remaining_parts(tmp_path):
    result = gpu.run_check(gpu.quick_settings(budget_s=0), tmp_path, log=lambda line: None)
    assert {name: p["status"] for name, p in result["parts"].items()} == {name: "skipped" for name in gpu.PARTS}
    assert result["parts"]["train"]["reason"] == "the run's time budget was spent"
    assert gpu.format_table(result).count("| skipped |") == len(gpu.PARTS)


def test_part_budgets_leave_time_for_the_later_parts(tmp_path):
    run = gpu.Run(gpu.gpu_settings(device="cpu", budget_s=300), tmp_path)
    names = list(gpu.PARTS)
    budgets = run.settings.part_budgets
    reserve = sum(budgets[n] for n in names[1:]) / 3
    assert run.part_budget("build", names) == pytest.approx(min(budgets["build"], 300 - reserve), abs=1)
    assert run.part_budget("decode", names) == pytest.approx(budgets["decode"], abs=1)


def test_pytest_counts_read_the_closing_line():
    assert gpu.pytest_counts("....\n3 passed, 1 failed, 2 skipped, 540 deselected, 1 error in 9.12s\n") == \
        {"passed": 3, "failed": 1, "skipped": 2, "deselected": 540, "errors": 1}
    assert gpu.pytest_counts("==== 540 deselected in 3.20s ====") == {"deselected": 540}
    assert gpu.pytest_counts("ImportError while loading conftest") == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message of a machine without a GPU")
def test_without_a_gpu_the_command_says_so_in_one_line(tmp_path):
    result = run_script("benchmark.py", "gpu", "--out", tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no CUDA GPU" in result.stderr
    assert not (tmp_path / "gpu.json").exists()
    refused = run_script("benchmark.py", "gpu", "--device", "cpu", "--quick", "--out", tmp_path, "--update-readme",
                         check=False)
    assert refused.returncode == 2 and "--update-readme needs --device cuda" in refused.stderr


def _timing(ms):
    return {"median_ms": ms, "min_ms": 0.9 * ms, "runs": 30}


def _gpu_result():
    """What a CUDA run's gpu.json holds (the figures made up): the table's GPU columns."""
    settings = gpu._jsonable(gpu.asdict(gpu.gpu_settings()))
    rows = [{"precision": p, "batch": b, **_timing(2.0 * b), "images_per_s": 500.0, "peak_allocated_mib": 300.0 * b}
            for p in ("fp32", "bf16") for b in (1, 8, 32)]
    rows[-1] = {"precision": "bf16", "batch": 32, "error": "out of memory: CUDA out of memory"}
    inference = {"rows": rows, "precisions": ["fp32", "bf16"], "predictor": {**_timing(4.0), "images_per_s": 250.0},
                 "bf16_max_abs_diff": 0.01, "bf16_relative_diff": 0.004, "timed": "forward", "network": "net",
                 "config": "configs/x.yaml"}
    loader = {"steps": 100, "asked": 100, "samples": 600, "seconds": 5.0, "s_per_step": 0.05, "samples_per_s": 120.0,
              "peak_allocated_mib": 9000.0, "peak_reserved_mib": 10000.0}
    train = {"config": "configs/coco2017_r50.yaml", "network": "keypoint", "data": "coco-mini train2017",
             "dataset_samples": 80, "steps_per_epoch": 13, "input": "480×480 augmented crops", "batch_size": 6,
             "amp": "bf16", "channels_last": True, "num_workers": 6, "warmup_steps": 10, "loader": loader,
             "held_batch": {**loader, "steps": 30, "asked": 30, "samples_per_s": 200.0}}
    decode = {"multiposenet": {"peaks": _timing(2.0), "total": _timing(20.0), "peak_count": 340, "people": 20,
                               "found": 20, "grouping": "prn"},
              "openpose": {"peaks": _timing(2.0), "grouping": _timing(3.0), "total": _timing(5.0), "peak_count": 360,
                           "people": 20, "recovered": 20, "stride": 8}, "threads": 1}
    ok = {"status": "ok", "seconds": 10.0}
    return {"settings": settings, "seconds": 300.0, "machine": {"gpu": "NVIDIA H100", "cuda": "13.0"}, "parts": {
        "build": {**ok, "result": {"command": "python setup.py build_ext --inplace", "TORCH_CUDA_ARCH_LIST": "9.0",
                                   "build_s": 61.0, "boxes": 2000}},
        "cuda-tests": {**ok, "result": {"command": "python -m pytest -m cuda -q", "passed": 8, "deselected": 584}},
        "train": {**ok, "result": train},
        "inference-multiposenet": {**ok, "result": inference},
        "inference-openpose": {"status": "running"},
        "decode": {**ok, "result": decode}}}


def test_the_table_of_a_gpu_run_goes_into_its_docs_block(tmp_path):
    table = gpu.format_table(_gpu_result())
    assert table.startswith("### On a GPU") and "Machine: gpu NVIDIA H100; cuda 13.0." in table
    assert "TORCH_CUDA_ARCH_LIST=9.0, 61 s" in table and "`python -m pytest -m cuda -q`: 8 passed |" in table
    assert "| the trainer's loader (6 workers) | 100 | 0.050 | 120.0 | 9000 | 10000 |" in table
    assert "| fp32 | 8 | 16.00 | 14.40 | 500 | 30 | 2400 |" in table  # the peak memory column
    assert "| bf16 | 32 | out of memory: CUDA out of memory | | | | |\n" in table and "1 row(s) failed" in table
    assert "| inference, OpenPose | running |" in table and "did not finish" in table

    # --update-readme writes it between the block's markers, in place of the note that nothing was measured
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "benchmarks.md"
    page.write_text((gpu.REPO / "docs" / "benchmarks.md").read_text())
    assert "Not measured yet" in page.read_text()
    update_generated_block("gpu", table, root=tmp_path)
    text = page.read_text()
    assert "Not measured yet" not in text and f"<!-- benchmark:gpu -->\n{table}<!-- /benchmark:gpu -->" in text
