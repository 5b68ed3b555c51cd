"""Pick the device, seed every generator, and make runs repeatable.

Device choice (``--device``): ``auto`` prefers CUDA, then Apple MPS, then the CPU; an explicit
``cuda``, ``cuda:1`` or ``mps`` that this machine lacks is a :class:`~detseg.errors.UserError` naming
the fix, never a silent fall back to the CPU.

MPS fallback: ``PYTORCH_ENABLE_MPS_FALLBACK=1`` lets an operator that has no Metal kernel run on the
CPU instead of raising ``NotImplementedError``. PyTorch reads the variable when it is imported, so this
module sets it (unless the user already set it) *before* its own ``import torch``, on macOS only; import
``detseg.devices`` first, or export the variable in the shell. Operators of our examples concerned:

- ``torchvision::roi_align`` and ``torchvision::nms`` (Mask / Faster R-CNN heads, every detector's
  post-processing), plus ``roi_pool``: no MPS kernel before torchvision 0.16; ``roi_align`` backward still
  has none for float16 inputs.
- ``deform_conv2d`` and a few ``aten`` ops (some upsampling / index ops, depending on the PyTorch version).

Determinism: :func:`seed_everything` seeds Python, NumPy and torch (CPU and every CUDA device);
:func:`set_deterministic` turns on deterministic algorithms. On the CPU that makes two runs bit-identical
(the engine's kill-and-resume test relies on it); on CUDA a few kernels our models use have no
deterministic version (``roi_align`` backward, ``nll_loss2d`` forward, bilinear upsampling backward),
so they only warn (``warn_only=True``): close, not identical.
"""

from __future__ import annotations

import os
import platform
import random
import re
import sys
from collections.abc import MutableMapping


def _enable_mps_fallback(
    environ: MutableMapping[str, str], *, is_macos: bool, torch_imported: bool
) -> bool:
    """Set ``PYTORCH_ENABLE_MPS_FALLBACK=1`` in ``environ`` when it can still matter.

    Returns True when the fallback is in effect for this process's torch: exported by the user before
    Python started, or set here on macOS before torch was imported. A value the user set is kept.
    """
    from_shell = environ.get("PYTORCH_ENABLE_MPS_FALLBACK") == "1"
    if is_macos and not torch_imported:
        environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    return environ.get("PYTORCH_ENABLE_MPS_FALLBACK") == "1" and (from_shell or not torch_imported)


MPS_FALLBACK_ACTIVE = _enable_mps_fallback(
    os.environ, is_macos=sys.platform == "darwin", torch_imported="torch" in sys.modules
)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from detseg.errors import UserError  # noqa: E402

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:<index>", "mps")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); ":4096:8" is NVIDIA's advice.
CUBLAS_WORKSPACE = ":4096:8"


def mps_available() -> bool:
    """True when this PyTorch has an MPS backend and the machine can use it (macOS 12.3+, Apple GPU)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(name: str = "auto") -> torch.device:
    """Turn a ``--device`` value into a ``torch.device``.

    Args:
        name: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"mps"``.
    Returns:
        The device. ``"cuda"`` without an index gives ``cuda:0`` (under ``torchrun`` the engine moves
        each process to ``cuda:LOCAL_RANK``).
    Raises:
        UserError: an unknown name, or a device this machine does not have.
    """
    text = name.strip().lower()
    if not _DEVICE_PATTERN.match(text):
        raise UserError(
            f"unknown device '{name}'",
            fix=f"use one of {', '.join(DEVICE_CHOICES)}",
        )
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if mps_available():
            _warn_if_mps_fallback_missing()
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not mps_available():
            built = (
                getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_built()
            )
            why = (
                "this macOS or GPU does not support it (needs macOS 12.3+ on Apple silicon or AMD)"
                if built
                else "this PyTorch build has no MPS backend (it exists on macOS builds only)"
            )
            raise UserError(f"--device mps requested but {why}", fix="use --device auto or cpu")
        _warn_if_mps_fallback_missing()
        return torch.device("mps")
    # cuda or cuda:<index>
    index = int(text.split(":")[1]) if ":" in text else 0
    if not torch.cuda.is_available():
        why = (
            "this PyTorch is a CPU-only build"
            if torch.version.cuda is None
            else f"no CUDA GPU is visible (PyTorch built for CUDA {torch.version.cuda}; "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES)"
        )
        raise UserError(
            f"--device {text} requested but {why}",
            fix="use --device auto or cpu, or install a CUDA build of torch (pytorch.org/get-started)",
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(
            f"--device {text} requested but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})",
            fix="pick an existing index, or use --device cuda",
        )
    return torch.device("cuda", index)


def _warn_if_mps_fallback_missing() -> None:
    if not MPS_FALLBACK_ACTIVE:
        print(
            "note: PYTORCH_ENABLE_MPS_FALLBACK=1 was not set before torch was imported, so operators "
            "without an MPS kernel (e.g. torchvision roi_align / nms on torchvision < 0.16) will raise; "
            "export PYTORCH_ENABLE_MPS_FALLBACK=1 before starting Python",
            file=sys.stderr,
        )


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all CUDA devices).

    DataLoader workers are seeded by PyTorch from the torch generator (``base_seed + worker_id`` for
    torch and ``random``, a derived seed for NumPy), so seeding here also fixes the workers' draws.
    """
    if not 0 <= seed < 2**32:
        raise UserError(f"--seed {seed} is out of range", fix="use an integer in [0, 2**32)")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global generator is what libraries draw from)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_deterministic(on: bool = True, *, warn_only: bool = True) -> None:
    """Ask PyTorch for deterministic algorithms (``on=True``) or give the choice back (``on=False``).

    Sets ``torch.use_deterministic_algorithms(on, warn_only=warn_only)``, cuDNN's ``deterministic``
    and ``benchmark`` flags, and ``CUBLAS_WORKSPACE_CONFIG`` (when not set already; it must be set before
    the first cuBLAS call to matter). ``warn_only=True`` (default) turns "this op has no deterministic
    version" errors into warnings: torchvision's ``roi_align`` backward on CUDA is one, so Mask R-CNN
    could not train otherwise.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def describe_device(device: torch.device | str) -> str:
    """One line naming the device and what matters about it, for logs and ``metrics.json``.

    Examples: ``"cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB, compute 9.0, CUDA 12.4, torch 2.5.1)"``,
    ``"mps (Apple arm64, macOS 14.5, torch 2.5.1)"``, ``"cpu (x86_64, 8 threads, torch 2.5.1)"``.
    """
    device = torch.device(device)
    version = f"torch {torch.__version__.split('+')[0]}"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        memory = props.total_memory / 2**30
        return (
            f"cuda:{index} ({props.name}, {memory:.1f} GiB, compute {props.major}.{props.minor}, "
            f"CUDA {torch.version.cuda}, {version})"
        )
    if device.type == "mps":
        mac = platform.mac_ver()[0] or "unknown"
        fallback = ", CPU fallback on" if MPS_FALLBACK_ACTIVE else ""
        return f"mps (Apple {platform.machine()}, macOS {mac}{fallback}, {version})"
    cpu = platform.processor() or platform.machine()
    return f"{device.type} ({cpu}, {torch.get_num_threads()} threads, {version})"
