"""The training engine on a toy regression problem: learning, checkpoints, exact resume,
schedules, mixed precision, bad samples, clear errors and a two-process gloo run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from _engine_toy import ToyModel, ToyRegression, make_model
from posenet.engine import (
    SkippedSampleWarning,
    Trainer,
    WarmupCosine,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    load_model_state,
    save_atomic,
)
from posenet.engine import checkpoint as checkpoint_module
from posenet.engine.trainer import _objective
from posenet.errors import ConfigError, PosenetError

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def make_trainer(out_dir, **kw) -> Trainer:
    args = dict(
        model=make_model(dropout=kw.pop("dropout", 0.0)),
        optimizer=partial(torch.optim.SGD, lr=0.05),
        train_dataset=ToyRegression(64),
        epochs=4,
        batch_size=8,
        out_dir=out_dir,
        seed=7,
        log_every=3,
        progress=False,
        tensorboard=False,
    )
    args.update(kw)
    return Trainer(**args)


def records(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


class Crash(Exception):
    pass


def crash_at_step(trainer: Trainer, step: int) -> None:
    """Make ``trainer`` die when it is about to run global step ``step`` (counted from 1)."""
    train_batch = trainer._train_batch

    def dying(batch):
        if trainer.global_step == step:
            raise Crash
        return train_batch(batch)

    trainer._train_batch = dying


def assert_same_state(a: Trainer, b: Trainer) -> None:
    wa, wb = a.module.state_dict(), b.module.state_dict()
    assert list(wa) == list(wb), "the two models hold different tensors"
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs"
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for key in sa["state"]:
        assert sa["state"][key].keys() == sb["state"][key].keys(), key
        for field, value in sa["state"][key].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][key][field])), (key, field)
    assert a.global_step == b.global_step and a.epoch == b.epoch
    if a.schedule is not None:
        assert a.schedule.state_dict()["scheduler"]["last_epoch"] == b.schedule.state_dict()["scheduler"]["last_epoch"]


# ----------------------------------------------------------------------------- learning and outputs


def test_loss_goes_down_and_run_outputs_are_written(tmp_path):
    config = OmegaConf.create({"name": "toy", "output_dir": str(tmp_path), "lr": 0.02})
    held_out = ToyRegression(16)

    def val_loss(model, epoch):
        return {"val_loss": float(((model(held_out.x).squeeze(1) - held_out.y) ** 2).mean())}

    trainer = make_trainer(tmp_path, epochs=5, evaluate=val_loss, metric="val_loss", config=config, tensorboard=True)
    history = trainer.fit()
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < 0.1 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.1 * history[0]["val_loss"]
    assert {"train_mse", "train_l1", "val_loss", "lr", "samples_per_s", "bad_samples"} <= set(history[0])

    files = {p.name for p in tmp_path.iterdir()}
    assert {"last.pt", "best.pt", "log.txt", "metrics.jsonl", "config.yaml", "tb"} <= files
    assert not list(tmp_path.rglob("*.tmp"))
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 5
    assert len(records(tmp_path)) == 5

    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 5 and last["global_step"] == 40 and last["step_in_epoch"] == 0
    assert last["config"]["lr"] == 0.02
    assert last["code_version"]
    assert {"python", "numpy", "torch", "cuda"} <= set(last["rng"][0])
    assert last["metric"] == "val_loss" and last["best_metric"] == min(r["val_loss"] for r in history)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == last["best_epoch"]


def test_objective_is_the_loss_key_when_present_else_the_sum():
    a, b = torch.tensor(1.0), torch.tensor(2.0)
    total, parts = _objective({"a": a, "b": b})
    assert total.item() == 3.0 and parts["loss"].item() == 3.0
    total, parts = _objective({"loss": a, "b": b})
    assert total.item() == 1.0 and parts["b"].item() == 2.0
    with pytest.raises(TypeError, match="scalar"):
        _objective({"a": torch.ones(3)})


def test_evaluate_metrics_are_logged_and_pick_best_by_max(tmp_path):
    aps = iter([0.1, 0.3, 0.2])
    seen = []

    def evaluate(model, epoch):
        assert not model.training and not torch.is_grad_enabled()
        seen.append(epoch)
        return {"AP": next(aps), "AR": torch.tensor(0.5)}

    calls = []

    def visualize(model, batch, losses):
        calls.append(set(losses))
        return {"inputs": torch.rand(4, 3, 8, 8)}

    trainer = make_trainer(tmp_path, epochs=3, evaluate=evaluate, metric="AP", metric_mode="max",
                           visualize=visualize, visualize_every=5, tensorboard=True)
    history = trainer.fit()
    assert seen == [1, 2, 3]
    assert [r["AP"] for r in history] == [0.1, 0.3, 0.2] and history[0]["AR"] == 0.5
    assert trainer.best_metric == 0.3 and trainer.best_epoch == 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert len(calls) == 24 // 5 and "mse" in calls[0]
    assert "best AP 0.3 (epoch 2)" in (tmp_path / "log.txt").read_text()


def test_eval_every_skips_epochs_and_best_follows_the_evaluated_ones(tmp_path):
    aps = iter([0.4, 0.2])
    seen = []

    def evaluate(model, epoch):
        seen.append(epoch)
        return {"AP": next(aps)}

    trainer = make_trainer(tmp_path, epochs=3, evaluate=evaluate, metric="AP", metric_mode="max", eval_every=2,
                           scheduler="plateau", scheduler_kw={"patience": 0})
    history = trainer.fit()
    assert seen == [2, 3]  # every second epoch, and always the last
    assert "AP" not in history[0] and [r["AP"] for r in history[1:]] == [0.4, 0.2]
    assert trainer.best_epoch == 2 and load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_unknown_metric_is_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1, evaluate=lambda m, e: {"AP": 0.5}, metric="APP")
    with pytest.raises(ConfigError, match="'APP'.*AP"):
        trainer.fit()


# ----------------------------------------------------------------------------- checkpoints


def test_save_atomic_leaves_the_previous_file_when_saving_crashes(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_atomic({"step": 1, "w": torch.ones(3)}, target)

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"step": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    make_trainer(tmp_path / "a", epochs=1).fit()
    path = tmp_path / "a" / "last.pt"
    with pytest.raises(PosenetError, match=r"last\.pt.*shape mismatch.*hidden\.weight"):
        load_model_state(ToyModel(width=16), load_checkpoint(path)["model"], path)
    with pytest.raises(PosenetError, match=r"missing keys: extra\.weight"):
        model = ToyModel()
        model.extra = torch.nn.Linear(2, 2)
        load_model_state(model, load_checkpoint(path)["model"], path)
    with pytest.raises(PosenetError, match=r"last\.pt.*does not fit"):
        make_trainer(tmp_path / "b", model=ToyModel(width=4), resume=path)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PosenetError, match=r"cannot read checkpoint .*truncated\.pt"):
        load_checkpoint(truncated)
    with pytest.raises(PosenetError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_resume_without_checkpoint_starts_fresh_and_finished_run_does_nothing(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2, resume=True)
    assert trainer.epoch == 0
    trainer.fit()
    again = make_trainer(tmp_path, epochs=2, resume=True)
    assert again.epoch == 2
    assert again.fit() == []
    assert "nothing to do" in (tmp_path / "log.txt").read_text()


# ----------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_after_an_epoch_is_bitwise_exact(tmp_path, num_workers):
    kw = dict(dropout=0.2, num_workers=num_workers, scheduler="cosine", scheduler_kw={"warmup_steps": 5},
              optimizer=partial(torch.optim.Adam, lr=0.01))
    straight = make_trainer(tmp_path / "straight", **kw)
    straight.fit()

    first = make_trainer(tmp_path / "split", **kw)
    crash_at_step(first, 2 * first.steps_per_epoch + 1)  # dies at the first step of epoch 3
    with pytest.raises(Crash):
        first.fit()
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 2
    resumed = make_trainer(tmp_path / "split", resume=True, **kw)
    assert resumed.epoch == 2
    resumed.fit()
    assert_same_state(straight, resumed)
    assert [r["train_loss"] for r in records(tmp_path / "straight")] == [r["train_loss"] for r in records(tmp_path / "split")]

    if num_workers:  # the data, and so the weights, do not depend on the number of workers
        single = make_trainer(tmp_path / "single", **dict(kw, num_workers=0))
        single.fit()
        assert_same_state(straight, single)


def test_checkpoint_every_n_epochs_saves_less_and_a_crash_replays_exactly(tmp_path, monkeypatch):
    # Saves at epoch 2 (a new best), 3 (every third) and 5 (the last), not at 1 or 4.
    ap = {2: 0.5, 4: 0.2, 5: 0.2}
    kw = dict(epochs=5, checkpoint_every=3, eval_every=2, evaluate=lambda model, epoch: {"AP": ap[epoch]},
              metric="AP", metric_mode="max", dropout=0.2, optimizer=partial(torch.optim.Adam, lr=0.01))
    saved = []
    save = checkpoint_module.save_atomic
    monkeypatch.setattr(checkpoint_module, "save_atomic", lambda obj, path: saved.append(obj["epoch"]) or save(obj, path))
    straight = make_trainer(tmp_path / "straight", **kw)
    straight.fit()
    assert saved == [2, 3, 5]
    last, best = tmp_path / "straight" / "last.pt", tmp_path / "straight" / "best.pt"
    assert load_checkpoint(best)["epoch"] == 2 and load_checkpoint(last)["epoch"] == 5
    if best.stat().st_nlink == 2:  # a hard link to the epoch-2 file, which later saves left alone
        assert not last.samefile(best)

    first = make_trainer(tmp_path / "split", **kw)
    crash_at_step(first, 4 * first.steps_per_epoch + 1)  # dies in epoch 5, after reporting epoch 4
    with pytest.raises(Crash):
        first.fit()
    assert [r["epoch"] for r in records(tmp_path / "split")] == [1, 2, 3, 4]
    resumed = make_trainer(tmp_path / "split", resume=True, **kw)
    assert resumed.epoch == 3
    resumed.fit()
    assert_same_state(straight, resumed)
    drop = ("time_s", "eval_s", "samples_per_s")
    assert ([{k: v for k, v in r.items() if k not in drop} for r in records(tmp_path / "split")]
            == [{k: v for k, v in r.items() if k not in drop} for r in records(tmp_path / "straight")])
    assert "the 1 epoch(s) recorded after it run again" in (tmp_path / "split" / "log.txt").read_text()


def test_best_is_linked_or_copied_and_keeps_its_bytes_when_last_is_replaced(tmp_path, monkeypatch):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_atomic({"epoch": 1}, last)
    checkpoint_module.copy_atomic(last, best)
    save_atomic({"epoch": 2}, last)
    assert load_checkpoint(best)["epoch"] == 1 and load_checkpoint(last)["epoch"] == 2

    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(checkpoint_module.os, "link", no_links)  # e.g. some network file systems
    checkpoint_module.copy_atomic(last, best)
    assert load_checkpoint(best)["epoch"] == 2 and best.stat().st_nlink == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_resume_mid_epoch_from_a_step_checkpoint_is_bitwise_exact(tmp_path):
    kw = dict(dropout=0.2, checkpoint_every_steps=5, scheduler="step", scheduler_kw={"milestones": [2, 3]})
    straight = make_trainer(tmp_path / "straight", **kw)
    straight.fit()

    first = make_trainer(tmp_path / "split", **kw)
    crash_at_step(first, 13)  # the last checkpoint is step 10: the middle of epoch 2
    with pytest.raises(Crash):
        first.fit()
    saved = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 2, 10)
    resumed = make_trainer(tmp_path / "split", resume=True, **kw)
    resumed.fit()
    assert_same_state(straight, resumed)
    # the interrupted epoch's mean loss includes the steps before the crash
    a, b = records(tmp_path / "straight"), records(tmp_path / "split")
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=1e-9)


# ----------------------------------------------------------------------------- schedules


def _lr(opt):
    return opt.param_groups[0]["lr"]


def test_step_schedule_drops_at_milestones():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler("step", opt, milestones=[2, 4], gamma=0.1)
    lrs = []
    for _ in range(5):
        lrs.append(_lr(opt))
        schedule.step_iteration()  # no effect: an epoch schedule
        schedule.step_epoch()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_plateau_schedule_follows_the_metric():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler("plateau", opt, mode="max", patience=1, factor=0.5)
    lrs = []
    for ap in [0.1, 0.2, 0.2, 0.2, None, 0.3, 0.3, 0.3]:
        schedule.step_epoch(ap)
        lrs.append(_lr(opt))
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25])


def test_plateau_in_the_trainer_monitors_the_validation_metric(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3, evaluate=lambda m, e: {"AP": 0.5}, metric="AP", metric_mode="max",
                           scheduler="plateau", scheduler_kw={"patience": 0, "factor": 0.5})
    # a record holds the lr its epoch trained with; AP never improves after epoch 1
    assert [r["lr"] for r in trainer.fit()] == pytest.approx([0.05, 0.05, 0.025])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_cosine_schedule_warms_up_per_step_then_decays():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler("cosine", opt, epochs=2, steps_per_epoch=10, warmup_epochs=0.5, warmup_factor=0.1, min_lr_ratio=0.01)
    lrs = []
    for _ in range(21):
        lrs.append(_lr(opt))
        schedule.step_epoch()  # no effect: a per-step schedule
        schedule.step_iteration()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[:6] == sorted(lrs[:6]) and lrs[5] == pytest.approx(1.0)
    assert lrs[5:] == sorted(lrs[5:], reverse=True)
    assert lrs[20] == pytest.approx(0.01) and lrs[12] == pytest.approx(WarmupCosine(20, 5, 0.1, 0.01)(12))


def test_schedule_and_optimizer_factories_reject_bad_names():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_scheduler("none", opt) is None
    with pytest.raises(ConfigError, match="unknown lr schedule 'exp'"):
        build_scheduler("exp", opt)
    with pytest.raises(ConfigError, match="unknown option.*patiense"):
        build_scheduler("plateau", opt, patiense=3)
    with pytest.raises(ConfigError, match="total_steps"):
        build_scheduler("cosine", opt)
    assert isinstance(build_optimizer("adamw", [torch.nn.Parameter(torch.zeros(1))], lr=1e-3), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer("lion", [torch.nn.Parameter(torch.zeros(1))], lr=1e-3)


def test_adam_is_fused_and_steps_like_the_unfused_one():
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(300, 7)), torch.nn.Parameter(torch.randn(7))]
    copies = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    for name in ("adam", "adamw"):
        fused = build_optimizer(name, [{"params": weights}], lr=1e-2, weight_decay=1e-3)
        assert fused.defaults["fused"], name
        reference = (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(copies, lr=1e-2, weight_decay=1e-3)
        for _ in range(20):
            for w, c in zip(weights, copies):
                w.grad = torch.randn_like(w)
                c.grad = w.grad.clone()
            fused.step()
            reference.step()
        for w, c in zip(weights, copies):
            torch.testing.assert_close(w, c, rtol=1e-5, atol=1e-6)
    # where the fused kernels cannot go (here: parameters on the meta device), the plain Adam
    assert not build_optimizer("adam", [torch.nn.Parameter(torch.zeros(2, device="meta"))], lr=1e-3).defaults["fused"]


# ----------------------------------------------------------------------------- precision, data


def test_bf16_autocast_trains_on_cpu(tmp_path):
    history = make_trainer(tmp_path, epochs=3, amp="bf16", grad_clip=1.0).fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert "train_grad_norm" in history[0]


def test_fp16_with_grad_scaler_and_clipping_runs(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2, amp="fp16", grad_clip=1.0)
    assert trainer.scaler.is_enabled()
    history = trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.module.parameters())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert load_checkpoint(tmp_path / "last.pt")["scaler"]["scale"] > 0
    with pytest.raises(ConfigError, match="amp"):
        make_trainer(tmp_path, amp="fp8")


def test_bad_samples_are_skipped_counted_and_reported_once(tmp_path):
    dataset = ToyRegression(64, bad=(3, 10), missing=(20,))
    with pytest.warns(SkippedSampleWarning) as caught:
        history = make_trainer(tmp_path, epochs=2, train_dataset=dataset, drop_last=False).fit()
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedSampleWarning)]
    assert len(messages) == 3  # three samples, two epochs: each reported once
    assert any("/data/toy/0003.jpg" in m for m in messages)
    assert [r["bad_samples"] for r in history] == [3, 3]
    assert "skipped 3 bad samples" in (tmp_path / "log.txt").read_text()
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_a_batch_with_no_good_sample_is_skipped(tmp_path):
    dataset = ToyRegression(16, bad=range(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedSampleWarning)
        history = make_trainer(tmp_path, epochs=1, batch_size=4, train_dataset=dataset).fit()
    assert history[0]["skipped_batches"] == 4 and history[0]["bad_samples"] == 16
    assert "train_loss" not in history[0]


# ----------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]), OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(HERE / "_engine_toy.py"), *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    written = sorted(str(p.relative_to(tmp_path)) for p in Path(tmp_path).rglob("final.pt"))
    assert result.returncode == 0, f"final weights written: {written}\n{result.stderr[-3000:]}"


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    torchrun(tmp_path, str(tmp_path / "ddp"), "4", "3")

    import _engine_toy

    _engine_toy.main(str(tmp_path / "single"), 8, 3)
    ddp = torch.load(tmp_path / "ddp" / "final.pt")
    single = torch.load(tmp_path / "single" / "final.pt")
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-5)
    ddp_log, single_log = records(tmp_path / "ddp"), records(tmp_path / "single")
    assert [r["train_loss"] for r in ddp_log] == pytest.approx([r["train_loss"] for r in single_log], rel=1e-4)
    # rank 0 evaluated and every rank agreed on the best epoch
    assert [r["neg_mse"] for r in ddp_log] == pytest.approx([r["neg_mse"] for r in single_log], rel=1e-3)
    assert ddp_log[-1]["train_loss"] < ddp_log[0]["train_loss"]
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt["data"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert ckpt["best_epoch"] == load_checkpoint(tmp_path / "ddp" / "best.pt")["epoch"]


def test_two_gloo_processes_resume_bitwise_exactly(tmp_path):
    # dropout differs per rank: each rank's generator state must come back from the checkpoint
    # one launch: straight for 3 epochs, split after 2, then resumed with every generator reseeded
    torchrun(tmp_path, str(tmp_path), "4", "3", "dropout=0.3", "split_at=2")
    straight = torch.load(tmp_path / "straight" / "final.pt")
    resumed = torch.load(tmp_path / "split" / "final.pt")
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_amp_auto_is_bf16_only_where_native_and_slow_bf16_warns(tmp_path, monkeypatch):
    from posenet.engine import precision

    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16", lambda device, native=native: native)
        assert precision.resolve_amp("auto", "cpu") == ("bf16" if native else None)
        assert precision.resolve_amp("none", "cpu") is None and precision.resolve_amp(None, "cpu") is None
    with pytest.warns(precision.SlowPrecisionWarning, match="amp=auto or none"):
        assert precision.resolve_amp("bf16", "cpu") == "bf16"  # kept: same numbers, only slower
    with pytest.raises(ValueError, match="amp must be one of"):
        precision.resolve_amp("int8", "cpu")
    trainer = make_trainer(tmp_path, epochs=1, amp="auto")
    assert trainer.amp is None and trainer.amp_dtype is None


def test_channels_last_training_matches_the_default_layout(tmp_path):
    from posenet.config import build, load_config

    cfg = load_config(None, ["data.root=unused", "model.backbone_depth=18", "model.pretrained=none",
                             "model.frozen_bn=false", "model.fpn_channels=16", "model.subnet_channels=16",
                             "model.fuse_channels=16"])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
    targets = {"heatmaps": torch.rand(2, 17, 16, 16, generator=g), "segmentation": torch.rand(2, 1, 16, 16, generator=g),
               "ignore_mask": torch.ones(2, 1, 16, 16)}
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build.posenet_model(cfg, 17).train()
        x = images
        if channels_last:
            model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
            assert model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        loss = model(x, targets)["loss"]
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.detach(), grads))
    # the same computation in another memory layout: equal up to float rounding
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-4)
    (_, g0), (_, g1) = results
    assert float((g0 - g1).norm() / g0.norm()) < 1e-3


def test_trainer_channels_last_option_trains(tmp_path):
    history = make_trainer(tmp_path, epochs=2, channels_last=True).fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]


# ----------------------------------------------------------------------------- kill -9


def _toy_process(out_dir: Path, *options: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]), OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    cmd = [sys.executable, str(HERE / "_engine_toy.py"), str(out_dir), "4", "3", "dropout=0.2", "every=5", *options]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def uninterrupted_toy_weights(tmp_path_factory):
    """The final weights of the toy run the killed runs are compared with (run once)."""
    straight = tmp_path_factory.mktemp("toy") / "straight"
    _finish(_toy_process(straight))
    return torch.load(straight / "final.pt")


@pytest.mark.parametrize("where", ["hang_at_step=23", "hang_in_save=4"], ids=["mid-epoch", "mid-checkpoint-write"])
def test_sigkill_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, where, uninterrupted_toy_weights):
    """A real ``kill -9``: mid-epoch (three steps after a step checkpoint), or while a checkpoint
    file is half written. The resumed run ends with the uninterrupted run's weights, bit for
    bit, and the killed writer's temporary file neither breaks the resume nor stays behind."""
    import signal
    import time

    split = tmp_path / "split"
    proc = _toy_process(split, where)
    deadline = time.monotonic() + 120
    while not (split / "hanging").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the toy run never reached the point to kill it at"
        time.sleep(0.05)
    leftovers = sorted(p.name for p in split.glob(".*.tmp"))
    if "save" in where:
        assert leftovers, "the kill was meant to land while a checkpoint file was being written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (split / "hanging").unlink()
    if "save" in where:
        assert sorted(p.name for p in split.glob(".*.tmp")) == leftovers  # still there after the kill
    load_checkpoint(split / "last.pt")  # the last complete checkpoint is intact

    _finish(_toy_process(split, "resume=1"))
    a, b = uninterrupted_toy_weights, torch.load(split / "final.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not list(split.rglob("*.tmp")), "temporary files piled up"
    assert load_checkpoint(split / "last.pt")["epoch"] == 3


def test_atomic_write_removes_the_temporaries_of_dead_writers_only(tmp_path):
    from posenet.utils.io import atomic_write, remove_stale_temporaries, write_text_atomic

    target = tmp_path / "metrics.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".metrics.json.{int(dead.stdout)}.tmp"
    live = tmp_path / f".metrics.json.{os.getppid()}.tmp"  # a running process's write in progress
    other = tmp_path / ".other.json.1.tmp"
    for p in (stale, live, other):
        p.write_text("half")
    write_text_atomic(target, "{}")
    assert target.read_text() == "{}"
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(target) == []

    with pytest.raises(OSError, match="disk full"):
        with atomic_write(target, "w") as f:
            f.write("partial")
            raise OSError("disk full")
    assert target.read_text() == "{}" and not (tmp_path / f".metrics.json.{os.getpid()}.tmp").exists()
