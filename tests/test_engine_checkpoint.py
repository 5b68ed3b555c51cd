"""Checkpoints (atomic, weights_only, RNG states), loaders' epoch order, and the trackers."""

from __future__ import annotations

import io
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detseg import engine
from detseg.engine import checkpoint as ckpt
from detseg.engine import distributed as ddp
from detseg.engine import trackers
from detseg.errors import UserError


def test_atomic_write_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"epoch": 1, "weight": torch.ones(3)}, path)
    real_save = torch.save

    def crash_half_way(obj, handle):  # writes part of the file, then the process "dies"
        real_save(obj, handle)
        handle.truncate(handle.tell() // 2)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ckpt.torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"epoch": 2, "weight": torch.zeros(3)}, path)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    old = ckpt.load_checkpoint(path)
    assert old["epoch"] == 1 and torch.equal(old["weight"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_crash_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    ckpt.atomic_write_text(path, "old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_full_checkpoint_loads_with_weights_only(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    schedulers = {
        "step": torch.optim.lr_scheduler.StepLR(optimizer, 2),
        "lambda": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.9**epoch),
        "onecycle": torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
        "cosine": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 5),
    }
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": {name: s.state_dict() for name, s in schedulers.items()},
        "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        "epoch": 3,
        "config": ckpt.plain({"data_path": Path("/data"), "size": (640, 480), "n": np.int64(2)}),
        "rng": ckpt.rng_state(),
        "warmup": engine.Warmup(10, 0.1).state_dict(),
        "history": [{"epoch": 1, "lr": 0.1, "train": {"loss": 1.0}, "eval": {}, "time": {}}],
    }
    ckpt.save_checkpoint(state, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(ckpt.CHECKPOINT_KEYS) <= set(loaded)
    assert loaded["config"] == {"data_path": "/data", "size": [640, 480], "n": 2}
    assert torch.equal(loaded["model"]["weight"], model.weight)
    assert ckpt.model_state(loaded).keys() == model.state_dict().keys()


def test_rng_state_round_trip_covers_python_numpy_torch():
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    torch.manual_seed(5)
    np.random.randn()  # noqa: NPY002 (leaves a cached gaussian in the state)
    saved = ckpt.rng_state()
    first = (random.random(), np.random.randn(), torch.rand(4))  # noqa: NPY002
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    ckpt.set_rng_state(torch.load(buffer, weights_only=True))
    second = (random.random(), np.random.randn(), torch.rand(4))  # noqa: NPY002
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "checkpoint not found"),
        (b"", "corrupt or truncated"),
        (b"not a checkpoint at all" * 4, "corrupt or not a PyTorch file"),
        ("truncated", "corrupt or truncated"),
        ("pickled-object", "holds a types.SimpleNamespace object"),
        ("list", "is a list, not a dict"),
    ],
)
def test_load_checkpoint_errors(tmp_path, content, match):
    path = tmp_path / "c.pt"
    if content == "truncated":
        torch.save({"w": torch.ones(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "pickled-object":
        torch.save({"when": types.SimpleNamespace(a=1)}, path)
    elif content == "list":
        torch.save([torch.ones(1)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as caught:
        ckpt.load_checkpoint(path)
    assert caught.value.path == str(path)


def test_unreadable_checkpoint_says_permission_denied(tmp_path, monkeypatch):
    # root reads a chmod 000 file, so the OS error is raised where torch.load opens the file
    path = tmp_path / "last.pt"
    torch.save({"w": torch.ones(1)}, path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ckpt.torch, "load", denied)
    with pytest.raises(UserError) as caught:
        ckpt.load_checkpoint(path)
    assert caught.value.what == "checkpoint cannot be read (permission denied)"
    assert caught.value.fix == "check the file's permissions"
    assert caught.value.path == str(path)
    assert isinstance(caught.value.__cause__, PermissionError)


def test_load_model_state_names_the_first_mismatch_in_one_line(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1))
    good = {key: torch.full_like(value, 0.5) for key, value in model.state_dict().items()}
    engine.load_model_state(model, good)
    assert torch.equal(model[1].weight, good["1.weight"])

    missing = {key: value for key, value in good.items() if key != "1.bias"}
    with pytest.raises(UserError) as error:
        engine.load_model_state(model, missing, what="the pretrained weights", path=tmp_path / "w")
    message = str(error.value)
    assert "\n" not in message and "the pretrained weights do not fit" in message
    assert '"1.bias"' in message and str(tmp_path / "w") in message

    wrong_shape = dict(good, **{"0.weight": torch.zeros(5, 3, 3, 3)})
    with pytest.raises(UserError, match=r"size mismatch for 0\.weight"):
        engine.load_model_state(model, wrong_shape)
    extra = dict(good, head=torch.zeros(1))
    with pytest.raises(UserError, match='Unexpected key.*"head"') as error:
        engine.load_model_state(model, extra)
    assert error.value.fix == "pass weights saved from the same model and options"
    # a very long first problem is cut at 200 characters
    long_names = dict(good, **{f"extra_{'x' * 300}": torch.zeros(1)})
    with pytest.raises(UserError) as error:
        engine.load_model_state(model, long_names)
    inside = error.value.what.partition("(")[2].removesuffix(")")
    assert len(inside) == 203 and inside.endswith("...")


def test_make_loader_order_depends_only_on_seed_and_epoch(monkeypatch):
    items = list(range(10))

    def epoch_order(seed: int, epoch: int) -> list[int]:
        loader = engine.make_loader(items, 3, shuffle=True, seed=seed, workers=0)
        ddp.set_loader_epoch(loader, epoch)
        return [int(i) for batch in loader for i in batch]

    assert sorted(epoch_order(0, 1)) == items
    assert epoch_order(0, 1) == epoch_order(0, 1)
    assert epoch_order(0, 1) != epoch_order(0, 2)
    assert epoch_order(0, 1) != epoch_order(1, 1)
    plain_order = [int(i) for b in engine.make_loader(items, 4, False, 0, 0) for i in b]
    assert plain_order == items
    # As process r of 2 under torchrun: every other item of the same permutation, padded to 5 each.
    whole = epoch_order(7, 3)
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert ddp.dist_info() == ddp.DistInfo(rank=rank, world_size=2, local_rank=rank)
        assert epoch_order(7, 3) == whole[rank::2]


def test_make_loader_rejects_bad_sizes():
    with pytest.raises(UserError, match="batch size must be >= 1"):
        engine.make_loader([1], 0, True, 0, 0)
    with pytest.raises(UserError, match="workers must be >= 0"):
        engine.make_loader([1], 1, True, 0, -1)


HISTORY = [
    {"epoch": 1, "lr": 0.1, "train": {"loss": 2.0}, "eval": {}, "time": {"epoch_s": 1.0}},
    {"epoch": 2, "lr": 0.1, "train": {"loss": 1.0}, "eval": {"map": 0.5}, "time": {"epoch_s": 1.0}},
]


def test_csv_tracker_rewrites_with_every_column(tmp_path):
    tracker = trackers.make_tracker("csv", tmp_path, config={})
    tracker.log_epoch(HISTORY[:1])
    tracker.log_epoch(HISTORY)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "epoch,lr,train/loss,time/epoch_s,eval/map",
        "1,0.1,2.0,1.0,",
        "2,0.1,1.0,1.0,0.5",
    ]
    with pytest.raises(UserError, match="unknown tracker 'tensorboard'"):
        trackers.make_tracker("tensorboard", tmp_path, config={})


def test_tracker_choices_match_the_cli():
    from detseg.cli.common import TRACKER_CHOICES

    assert tuple(trackers.TRACKERS) == TRACKER_CHOICES


class FakeRun:
    def __init__(self, **kwargs) -> None:
        self.init_kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    runs: list[FakeRun] = []
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: runs.append(FakeRun(**kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def test_wandb_offline_by_default_and_same_run_on_resume(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k")  # a key alone does not make it online
    tracker = trackers.make_tracker("wandb", tmp_path, config={"lr": 0.1})
    tracker.log_epoch(HISTORY)
    tracker.close()
    run = fake_wandb[0]
    assert run.init_kwargs["mode"] == "offline" and run.init_kwargs["dir"] == str(tmp_path)
    assert run.init_kwargs["config"] == {"lr": 0.1} and run.finished
    assert run.logged == [(2, trackers.flatten_epoch(HISTORY[1]))]
    trackers.make_tracker("wandb-online", tmp_path, config={})
    assert fake_wandb[1].init_kwargs["mode"] == "online"
    assert fake_wandb[1].init_kwargs["id"] == run.init_kwargs["id"]


def test_wandb_errors(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(UserError, match="needs WANDB_API_KEY"):
        trackers.make_tracker("wandb-online", tmp_path, config={})
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(UserError, match="pip install wandb"):
        trackers.make_tracker("wandb", tmp_path, config={})
    assert fake_wandb == []


class _EnabledScaler:
    """A GradScaler as it is on CUDA (enabled), for the restore path on a CPU-only machine."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.loaded = enabled, []

    def is_enabled(self) -> bool:
        return self.enabled

    def load_state_dict(self, state: dict) -> None:
        self.loaded.append(state)


def test_restore_training_state_gives_the_scaler_its_saved_state():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saved_scale = {"scale": 1024.0, "growth_factor": 2.0, "_growth_tracker": 7}
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    scaler = _EnabledScaler()
    ckpt.restore_training_state({**checkpoint, "scaler": saved_scale}, model=model,
                                optimizer=optimizer, scaler=scaler)  # fmt: skip
    assert scaler.loaded == [saved_scale]
    # a run without AMP saved None, and a disabled scaler (CPU) takes nothing
    for state, scaler in [(None, _EnabledScaler()), (saved_scale, _EnabledScaler(enabled=False))]:
        ckpt.restore_training_state({**checkpoint, "scaler": state}, model=model,
                                    optimizer=optimizer, scaler=scaler)  # fmt: skip
        assert scaler.loaded == []


def test_cuda_generator_states_round_trip_where_the_device_count_matches(monkeypatch):
    # two CUDA devices faked on the CPU: what rng_state saves comes back through set_rng_state
    generators = [torch.full((16,), 3, dtype=torch.uint8), torch.full((16,), 5, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [g.clone() for g in generators])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    state = ckpt.rng_state()
    assert [s.tolist() for s in state["cuda"]] == [g.tolist() for g in generators]
    ckpt.set_rng_state(state)
    assert [[s.tolist() for s in states] for states in restored] == [
        [g.tolist() for g in generators]
    ]
    # a checkpoint of another device count leaves the CUDA generators alone
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    ckpt.set_rng_state(state)
    assert len(restored) == 1


def test_load_model_state_cuts_a_first_problem_only_past_200_characters():
    model = nn.Linear(2, 1)
    good = model.state_dict()

    def first_problem(extra_key: str) -> str:
        with pytest.raises(UserError) as error:
            engine.load_model_state(model, dict(good, **{extra_key: torch.zeros(1)}))
        return error.value.what.partition("(")[2].removesuffix(")")

    probe = first_problem("k")  # the line with a key of one character
    at_200 = first_problem("k" * (201 - len(probe)))
    assert len(at_200) == 200 and not at_200.endswith("...")
    full_201 = at_200.replace('"', '"k', 1)  # the same line, one character longer
    assert first_problem("k" * (202 - len(probe))) == full_201[:200] + "..."


def test_pickled_object_error_names_the_trusted_way_to_load(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"when": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(UserError) as caught:
        ckpt.load_checkpoint(path)
    assert caught.value.fix == (
        "save only state_dicts and plain types; load files you trust with "
        "torch.load(path, weights_only=False)"
    )


def test_restore_of_another_model_names_torch_first_line(tmp_path):
    model, other = nn.Linear(2, 1), nn.Linear(3, 1)
    checkpoint = {"model": model.state_dict(), "optimizer": {}}
    with pytest.raises(RuntimeError) as torch_error:
        other.load_state_dict(checkpoint["model"])
    first_line = str(torch_error.value).strip().splitlines()[0][:200]
    with pytest.raises(UserError) as caught:
        ckpt.restore_training_state(checkpoint, model=other,
                                    optimizer=torch.optim.SGD(other.parameters()), path=tmp_path)  # fmt: skip
    assert caught.value.what == f"checkpoint does not fit this model / optimizer ({first_line})"
    assert caught.value.path == str(tmp_path)
