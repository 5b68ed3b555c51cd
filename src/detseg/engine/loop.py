"""The one training loop every example uses (STYLE.md #6).

Per epoch: a tqdm bar (ETA, loss, lr, data vs compute time), the step function, a linear warm-up in
the first iterations, optional gradient clipping, AMP on CUDA, a stop on the first non-finite loss,
then ``evaluate_fn``, the scheduler, an atomic ``last.pt`` (and ``best.pt``), ``metrics.json``, the
tracker, and ``training_curves.png`` (after the last epoch, and at most once a minute before).
Epoch numbers are 1-based everywhere (history, checkpoint ``"epoch"`` = epochs completed, messages,
``evaluate_fn``); batches are numbered 1..N in messages.

Exact resume: a checkpoint holds model, optimizer, scheduler, AMP scaler, warm-up position, history
and every random state. The loader's order is a function of ``(seed, epoch)`` (``make_loader`` and
``set_epoch``), and after each checkpoint the loop resets the random states to the saved snapshot, so a
run killed in epoch 3 and resumed from ``last.pt`` ends with the same weights, bit for bit on the CPU
with :func:`detseg.devices.set_deterministic`, as a run never interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from detseg.devices import describe_device
from detseg.engine import distributed as ddp
from detseg.engine.checkpoint import (
    atomic_write_text,
    copy_atomic,
    load_checkpoint,
    plain,
    restore_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from detseg.engine.history import (
    best_of,
    epoch_line,
    metric_value,
    nonfinite_message,
    update_best,
    write_training_curves,
)
from detseg.engine.steps import StepFn, Warmup, as_loss_dict, detection_step
from detseg.engine.trackers import NoTracker, flatten_epoch, make_tracker
from detseg.errors import UserError

EvaluateFn = Callable[[nn.Module, int], Mapping[str, float]]
CURVES_EVERY_S = 60.0  # redraw training_curves.png at most this often, and after the last epoch
# When stderr is not a terminal (a log file, CI), no bar: a line every this many steps, and the
# line that ends each epoch.
LOG_EVERY_STEPS = 100


class NonFiniteLossError(UserError):
    """Training met a NaN / inf loss (or weights); nothing of that epoch was saved."""


def train(
    model: nn.Module,
    train_loader: Iterable[Any],
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    output_dir: str | Path,
    device: torch.device | str,
    lr_scheduler: Any = None,
    lr_scheduler_interval: str = "epoch",
    step_fn: StepFn | None = None,
    evaluate_fn: EvaluateFn | None = None,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    clip_grad_norm: float | None = None,
    amp: bool = False,
    tracker: str = "none",
    resume: bool | str | Path = False,
    config: Mapping[str, Any] | None = None,
    best_metric: str | None = None,
    best_mode: str = "max",
    print_freq: int = 10,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs, checkpointing every epoch into ``output_dir``.

    Args:
        model: the module; moved to ``device`` (and DDP-wrapped under ``torchrun``).
        train_loader: yields batches for ``step_fn``; use :func:`make_loader` for exact resume / DDP.
        optimizer: built on ``model``'s parameters.
        epochs: total epochs of the run (a resumed run continues up to this number).
        output_dir: run folder: ``last.pt``, ``best.pt``, ``metrics.json``, tracker files, plots.
        device: from :func:`detseg.devices.select_device`.
        lr_scheduler: optional; stepped once per epoch, or per step with
            ``lr_scheduler_interval="step"``; ``ReduceLROnPlateau`` gets ``best_metric`` (else the loss).
        step_fn: ``(model, batch, device) -> dict of scalar losses`` (summed for backward); default
            :func:`~detseg.engine.steps.detection_step`.
        evaluate_fn: ``(model, epoch) -> {metric: float}`` after every epoch, called with the model in
            eval mode under ``torch.no_grad()``; under DDP it runs on every process (on the unwrapped
            model) and the numbers are averaged: give it a shard of the validation set
            (``make_loader(..., shuffle=False)``) for mean-type metrics, or the whole set on every
            process for metrics such as mAP that do not average over shards.
        warmup_iters, warmup_factor: linear warm-up of the lr over the first ``warmup_iters``
            steps, from ``warmup_factor`` x lr (see :class:`~detseg.engine.steps.Warmup`).
        clip_grad_norm: clip the global gradient L2 norm to this value; the mean pre-clip norm is logged.
        amp: mixed precision (autocast + GradScaler) on CUDA; ignored, with a note, elsewhere.
        tracker: ``"none" | "csv" | "wandb" | "wandb-online"`` (:mod:`detseg.engine.trackers`).
        resume: False; True for ``output_dir/last.pt``; or a checkpoint path.
        config: plain dict stored in checkpoints and ``metrics.json`` (e.g. ``vars(args)``): what
            ``predict.py`` needs to rebuild the model.
        best_metric: name in the epoch's numbers (``"map"``, ``"eval/map"``, ``"loss"``) that decides
            ``best.pt``; None writes no ``best.pt``.
        best_mode: ``"max"`` or ``"min"``.
        print_freq: refresh the progress bar's numbers every this many steps.
        progress: show the bar at all (rank 0 only in any case).
        max_steps_per_epoch: stop each epoch after this many steps (``--dry-run`` uses 1).
        stop_after_epoch: end this call after this epoch (1..``epochs``) of the ``epochs``-epoch
            run; progress lines still say ``epoch k/epochs``. :mod:`detseg.engine.budget` trains one
            epoch per call this way.
    Returns:
        ``{"history": [per-epoch dicts], "final": flat numbers of the last epoch, "best": {"metric",
        "mode", "value", "epoch"} or None, "output_dir": str}``; the same content as ``metrics.json``.
    Raises:
        NonFiniteLossError: a loss became NaN / inf (message names epoch, batch, image ids).
        UserError: a bad ``resume`` path, a checkpoint of another model, an unknown ``best_metric``.
    """
    if epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}", fix="pass a positive number")
    if stop_after_epoch is not None and not 1 <= stop_after_epoch <= epochs:
        raise ValueError(f"stop_after_epoch must be in 1..{epochs}, got {stop_after_epoch}")
    if best_mode not in ("max", "min"):
        raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    if lr_scheduler_interval not in ("epoch", "step"):
        raise ValueError(
            f"lr_scheduler_interval must be 'epoch' or 'step', not {lr_scheduler_interval!r}"
        )
    if clip_grad_norm is not None and clip_grad_norm <= 0:
        raise ValueError(f"clip_grad_norm must be > 0, got {clip_grad_norm}")
    device, created_group = ddp.init_distributed(torch.device(device))
    if amp and device.type != "cuda" and ddp.dist_info().is_main:
        print(f"note: --amp works on CUDA only; training in float32 on {device}", file=sys.stderr)
    run = _Run(
        model=model.to(device),
        loader=train_loader,
        optimizer=optimizer,
        epochs=epochs,
        output_dir=Path(output_dir),
        device=device,
        scheduler=lr_scheduler,
        per_step_scheduler=lr_scheduler is not None and lr_scheduler_interval == "step",
        step_fn=step_fn or detection_step,
        evaluate_fn=evaluate_fn,
        warmup=Warmup(warmup_iters, warmup_factor),
        clip=clip_grad_norm,
        scaler=torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda"),
        config=plain(dict(config or {})),
        best_metric=best_metric,
        best_mode=best_mode,
        print_freq=max(1, print_freq),
        progress=progress,
        max_steps=max_steps_per_epoch,
        last_epoch=stop_after_epoch or epochs,
    )
    finished = False
    try:
        result = run.fit(tracker=tracker, resume=resume)
        finished = True
        return result
    finally:
        if created_group:
            ddp.destroy_distributed(barrier=finished)


@dataclass
class _Run:
    """Everything one call to :func:`train` works with (private: the public surface is ``train``)."""

    model: nn.Module
    loader: Iterable[Any]
    optimizer: torch.optim.Optimizer
    epochs: int
    output_dir: Path
    device: torch.device
    scheduler: Any
    per_step_scheduler: bool
    step_fn: StepFn
    evaluate_fn: EvaluateFn | None
    warmup: Warmup
    clip: float | None
    scaler: torch.amp.GradScaler
    config: dict[str, Any]
    best_metric: str | None
    best_mode: str
    print_freq: int
    progress: bool
    max_steps: int | None
    last_epoch: int  # the last epoch of this call: ``epochs``, or fewer (``stop_after_epoch``)
    info: ddp.DistInfo = field(default_factory=ddp.dist_info)
    history: list[dict[str, Any]] = field(default_factory=list)

    def fit(self, *, tracker: str, resume: bool | str | Path) -> dict[str, Any]:
        """Run the remaining epochs; returns what ``train`` returns."""
        main = self.info.is_main
        start, saved_rng = self._resume(resume) if resume else (0, None)  # before any write
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        train_model = ddp.wrap_model(self.model, self.device)
        tracker_ = (
            make_tracker(tracker, self.output_dir, config=self.config) if main else NoTracker()
        )
        best = best_of(self.history, self.best_metric, self.best_mode)
        meta = {"device": describe_device(self.device), "world_size": self.info.world_size}
        if saved_rng is not None:
            set_rng_state(saved_rng)
        last_plot = time.monotonic()
        try:
            for epoch in range(start + 1, self.last_epoch + 1):
                ddp.set_loader_epoch(self.loader, epoch)
                entry = self._train_epoch(train_model, epoch)
                if self.evaluate_fn is not None:
                    self.model.eval()
                    with torch.no_grad():
                        metrics = {
                            k: float(v) for k, v in self.evaluate_fn(self.model, epoch).items()
                        }
                    entry["eval"] = ddp.all_reduce_mean(metrics, self.device)
                self.history.append(entry)
                best, improved = update_best(best, entry, self.best_metric, self.best_mode)
                self._step_scheduler_per_epoch(entry)
                self._check_weights_finite(epoch)
                snapshot = rng_state()
                rng_ranks = ddp.all_gather_objects(snapshot) if self.info.enabled else None
                if main:
                    self._save(epoch, snapshot, rng_ranks, best_copy=improved)
                    summary = {"history": self.history, "best": best, **meta, "config": self.config}
                    atomic_write_text(
                        self.output_dir / "metrics.json", json.dumps(summary, indent=1)
                    )
                    tracker_.log_epoch(self.history)
                    if epoch == self.last_epoch or time.monotonic() - last_plot > CURVES_EVERY_S:
                        write_training_curves(self.history, self.output_dir)
                        last_plot = time.monotonic()
                    tqdm.write(epoch_line(entry, self.epochs), file=sys.stderr)
                # Logging and plotting above must not shift any random stream: a resumed run starts
                # from `snapshot`, so the uninterrupted one continues from it too.
                set_rng_state(snapshot)
        finally:
            tracker_.close()
        final = flatten_epoch(self.history[-1]) if self.history else {}
        return {
            "history": self.history,
            "final": final,
            "best": best,
            "output_dir": str(self.output_dir),
            **meta,
        }

    def _train_epoch(self, train_model: nn.Module, epoch: int) -> dict[str, Any]:
        """One pass over the loader; returns the epoch's history entry (``eval`` still empty)."""
        train_model.train()
        total_steps = _steps_in_epoch(self.loader, self.max_steps)
        show = self.progress and self.info.is_main
        in_log = show and not _is_terminal(sys.stderr)  # a log file or CI: no carriage returns
        bar = tqdm(
            total=total_steps,
            desc=f"epoch {epoch}/{self.epochs}",
            dynamic_ncols=True,
            disable=not show or in_log,
            file=sys.stderr,
        )
        sums: dict[str, float] = {}
        grad_norm_sum, steps, data_s, compute_s, lr = 0.0, 0, 0.0, 0.0, 0.0
        epoch_start = tick = time.perf_counter()
        for index, batch in enumerate(self.loader):
            if total_steps is not None and index >= total_steps:
                break
            loaded = time.perf_counter()
            data_s += loaded - tick
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.scaler.is_enabled()):
                losses = as_loss_dict(self.step_fn(train_model, batch, self.device))
                total = torch.stack([value.float().reshape(()) for value in losses.values()]).sum()
            if not ddp.all_ranks_true(bool(torch.isfinite(total.detach())), self.device):
                raise NonFiniteLossError(
                    nonfinite_message(losses, epoch, index, total_steps, batch),
                    fix="lower --lr or use a longer warm-up, and check those images' boxes with "
                    f"'detseg data validate'; {self.output_dir / 'last.pt'} holds epoch {epoch - 1}",
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if self.clip is not None:
                self.scaler.unscale_(self.optimizer)
                params = [p for group in self.optimizer.param_groups for p in group["params"]]
                grad_norm_sum += float(torch.nn.utils.clip_grad_norm_(params, self.clip))
            scheduled = self.warmup.apply(self.optimizer)
            lr = float(self.optimizer.param_groups[0]["lr"])
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.warmup.restore(self.optimizer, scheduled)
            if self.per_step_scheduler:
                self.scheduler.step()
            for name, value in losses.items():
                if name != "loss":  # "loss" is the sum, added below
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
            steps += 1
            tick = time.perf_counter()
            compute_s += tick - loaded
            bar.update(1)
            if steps % self.print_freq == 0 or steps in (1, total_steps):
                bar.set_postfix(
                    loss=f"{sums['loss'] / steps:.4f}",
                    lr=f"{lr:.3g}",
                    data=f"{data_s / steps * 1e3:.0f}ms",
                    compute=f"{compute_s / steps * 1e3:.0f}ms",
                    refresh=False,
                )
            if in_log and steps % LOG_EVERY_STEPS == 0 and steps != total_steps:
                print(
                    f"epoch {epoch}/{self.epochs} step {steps}/{total_steps or '?'} "
                    f"loss {sums['loss'] / steps:.4f} lr {lr:.3g}",
                    file=sys.stderr,
                    flush=True,
                )
        bar.close()
        if steps == 0:
            raise UserError(
                f"epoch {epoch} had no batches", fix="check that the dataset is not empty"
            )
        stats = {name: value / steps for name, value in sums.items()}
        if self.clip is not None:
            stats["grad_norm"] = grad_norm_sum / steps
        times = {
            "epoch_s": time.perf_counter() - epoch_start,
            "data_s": data_s,
            "compute_s": compute_s,
        }
        return {
            "epoch": epoch,
            "lr": lr,
            "steps": steps,
            "train": ddp.all_reduce_mean(stats, self.device),
            "eval": {},
            "time": ddp.all_reduce_mean(times, self.device),
        }

    def _step_scheduler_per_epoch(self, entry: dict[str, Any]) -> None:
        if self.scheduler is None or self.per_step_scheduler:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(metric_value(entry, self.best_metric or "loss"))
        else:
            self.scheduler.step()

    def _check_weights_finite(self, epoch: int) -> None:
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if not ddp.all_ranks_true(finite, self.device):
            raise NonFiniteLossError(
                f"weights became NaN / inf in epoch {epoch} (the last step's gradients overflowed)",
                fix=f"lower --lr or set a gradient clip; {self.output_dir / 'last.pt'} still holds "
                f"epoch {epoch - 1}",
            )

    def _save(
        self, epoch: int, rng: dict[str, Any], rng_ranks: list[Any] | None, *, best_copy: bool
    ) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": epoch,
            "config": self.config,
            "rng": rng,
            "warmup": self.warmup.state_dict(),
            "history": self.history,
        }
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        last = save_checkpoint(state, self.output_dir / "last.pt")
        if best_copy:
            copy_atomic(last, self.output_dir / "best.pt")

    def _resume(self, resume: bool | str | Path) -> tuple[int, dict[str, Any] | None]:
        """Load ``last.pt`` (or the given path); returns (epochs done, this rank's RNG states)."""
        path = self.output_dir / "last.pt" if resume is True else Path(resume)
        checkpoint = load_checkpoint(path)
        restore_training_state(
            checkpoint,
            model=self.model,
            optimizer=self.optimizer,
            lr_scheduler=self.scheduler,
            scaler=self.scaler,
            path=path,
        )
        if checkpoint.get("warmup") is not None:
            self.warmup.load_state_dict(checkpoint["warmup"])
        self.history = list(checkpoint.get("history", []))
        old = checkpoint.get("config", {})
        changed = [
            k for k in sorted(set(old) | set(self.config)) if old.get(k) != self.config.get(k)
        ]
        changed = [k for k in changed if k not in ("resume", "epochs")]
        if changed and self.info.is_main:
            print(
                f"note: resuming {path} with changed settings: {', '.join(changed)}",
                file=sys.stderr,
            )
        ranks = checkpoint.get("rng_ranks") or []
        rng = ranks[self.info.rank] if len(ranks) == self.info.world_size else checkpoint.get("rng")
        return int(checkpoint["epoch"]), rng


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _steps_in_epoch(loader: Iterable[Any], max_steps: int | None) -> int | None:
    """Batches this epoch will run: ``len(loader)`` capped by ``max_steps`` (None if unknown)."""
    try:
        total: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)
    return total
