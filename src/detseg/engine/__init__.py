"""The PyTorch training engine: one loop, plain checkpoints, trackers, DDP under torchrun.

Typical use in an example's ``train.py``::

    from detseg import devices, engine

    device = devices.select_device(args.device)
    devices.seed_everything(args.seed)
    loader = engine.make_loader(dataset, args.batch_size, shuffle=True, seed=args.seed,
                                workers=args.workers, collate_fn=collate)
    result = engine.train(model, loader, optimizer=optimizer, device=device,
                          **common.train_kwargs(args), evaluate_fn=evaluate, best_metric="map")

Modules: :mod:`~detseg.engine.loop` (``train``), :mod:`~detseg.engine.steps` (step functions,
warm-up), :mod:`~detseg.engine.checkpoint` (atomic save, ``weights_only`` load, RNG states),
:mod:`~detseg.engine.trackers` (none / csv / wandb), :mod:`~detseg.engine.distributed` (torchrun, DDP,
``make_loader``), :mod:`~detseg.engine.ema` (``WithEMA``: a moving average of the weights).
"""

from detseg.engine.checkpoint import load_checkpoint, load_model_state, model_state, save_checkpoint
from detseg.engine.distributed import dist_info, make_loader
from detseg.engine.ema import WithEMA
from detseg.engine.loop import NonFiniteLossError, train
from detseg.engine.steps import Warmup, detection_step, supervised_step
from detseg.engine.trackers import TRACKERS, flatten_epoch

__all__ = [
    "TRACKERS",
    "NonFiniteLossError",
    "Warmup",
    "WithEMA",
    "detection_step",
    "dist_info",
    "flatten_epoch",
    "load_checkpoint",
    "load_model_state",
    "make_loader",
    "model_state",
    "save_checkpoint",
    "supervised_step",
    "train",
]
