"""ONNX export and the checks that the exported model still computes what the eager one does.

- :func:`export_onnx` writes a model with ``torch.onnx.export`` and checks the file with
  ``onnx.checker``. ``dynamo=False`` (the default here) uses the TorchScript tracer, which exports
  torchvision detectors (post-processing included) in torch 2.14; ``dynamo=True`` (``torch.export``)
  needs the ``onnxscript`` package.
- :func:`ort_session` opens it in ONNX Runtime, :func:`run_opencv_dnn` in OpenCV's DNN module.
- :func:`check_parity` is the max abs difference of all outputs, eager vs ONNX Runtime; use it where
  outputs are continuous functions of the input (backbones, raw heads, segmentation logits).
- :func:`match_detections` compares final detections by IoU matching: score thresholds, top-k and NMS
  are discontinuous, so two correct implementations may keep or order a near-tie box differently.
- :func:`single_pixel_convs_as_1x1` makes a model OpenCV DNN 4 runs right where a padded k x k
  convolution sees a 1 x 1 map (OpenCV's depthwise kernel reads the next channels there).
- :func:`time_inference` times a callable (median, 10th and 90th percentile).

torch, onnx and onnxruntime are imported inside the functions that need them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detseg.bench import time_it
from detseg.boxes import box_iou
from detseg.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor, nn


def flatten_outputs(value: Any) -> list[Any]:
    """Leaves of nested dicts / lists / tuples in order (dicts in insertion order), as the exporter
    flattens a model's inputs and outputs.

    Example: ``[{"boxes": b, "scores": s}]`` -> ``[b, s]``.
    """
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in flatten_outputs(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten_outputs(item)]
    return [value]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def export_onnx(
    model: Any,
    example_inputs: Any,
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    opset: int = 17,
    dynamo: bool = False,
    quiet: bool = True,
) -> Path:
    """Export ``model`` to an ONNX file and validate it with ``onnx.checker``.

    Args:
        model: a ``torch.nn.Module``; it is put in eval mode (export traces inference).
        example_inputs: a tensor or a tuple of positional arguments (a torchvision detector takes
            ``([image [3, H, W]],)``: one list of images).
        path: the ``.onnx`` file to write (parents are created).
        input_names / output_names: names of the flattened inputs / outputs, in order.
        dynamic_axes: ``{name: {axis: "symbol"}}`` for axes that vary at run time, e.g.
            ``{"images": {0: "batch"}, "logits": {0: "batch"}}``; every other axis is fixed.
        opset: ONNX opset version.
        dynamo: use the ``torch.export`` based exporter (needs ``onnxscript``) instead of the
            TorchScript tracer.
        quiet: hide the tracer's warnings (data-dependent Python values turned into constants, the
            legacy-exporter deprecation notice); they are expected for detectors.
    Returns:
        ``path`` as a Path.
    Raises:
        UserError: ``dynamo=True`` without ``onnxscript`` installed.
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dynamo:
        try:
            import onnxscript  # noqa: F401
        except ModuleNotFoundError as err:
            raise UserError(
                "the dynamo ONNX exporter needs the 'onnxscript' package, which is not installed",
                fix="pip install onnxscript, or export with dynamo=False (TorchScript tracer)",
            ) from err
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    model.eval()
    with warnings.catch_warnings():
        if quiet:
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        extra: dict[str, Any] = {"external_data": False} if dynamo else {}
        with torch.no_grad():
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=None if dynamic_axes is None else dict(dynamic_axes),
                opset_version=opset,
                dynamo=dynamo,
                **extra,
            )
    onnx.checker.check_model(str(path))
    return path


def ort_session(
    path: str | Path, device: str = "cpu", *, threads: int | None = None
) -> Any:  # onnxruntime.InferenceSession
    """Open an ONNX file in ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        device: ``"cuda"`` uses the CUDAExecutionProvider when this onnxruntime build has it
            (``onnxruntime-gpu``) and falls back to the CPU; ``"cpu"`` always uses the CPU.
        threads: intra-op threads (``None``: onnxruntime's default, one per core).
    Returns:
        ``onnxruntime.InferenceSession``; ``session.get_providers()`` says what it runs on.
    Raises:
        UserError: the file is missing or is not a loadable ONNX model.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise UserError("ONNX file not found", path=path, fix="run the export first")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph / ... classes
        raise UserError(
            f"ONNX Runtime cannot load the model ({type(err).__name__}: {str(err)[:200]})",
            path=path,
            fix="re-export it; check the opset is supported by this onnxruntime",
        ) from err


def ort_run(session: Any, inputs: Any) -> list[np.ndarray]:
    """Run an ONNX Runtime session on the flattened ``inputs`` (tensors or arrays, in input order)."""
    leaves = [_to_numpy(leaf) for leaf in flatten_outputs(inputs)]
    names = [node.name for node in session.get_inputs()]
    if len(leaves) != len(names):
        raise ValueError(f"the ONNX model takes {len(names)} inputs {names}, got {len(leaves)}")
    return session.run(None, dict(zip(names, leaves)))


def check_parity(model: Any, session: Any, inputs: Any) -> float:
    """Max abs difference over all outputs between eager ``model(*inputs)`` and the ONNX session.

    Args:
        model: the eager ``torch.nn.Module`` (in eval mode).
        session: an ``onnxruntime.InferenceSession`` of its export.
        inputs: a tensor or a tuple of positional arguments, as given to :func:`export_onnx`.
    Returns:
        The largest ``|eager - onnx|`` over every element of every (flattened) output.
    Raises:
        ValueError: the outputs differ in number or shape (e.g. a detector that kept a different
            number of boxes; compare those with :func:`match_detections`).
    """
    import torch

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad():
        eager = [_to_numpy(leaf) for leaf in flatten_outputs(model(*args))]
    onnx_outputs = ort_run(session, args)
    if len(eager) != len(onnx_outputs):
        raise ValueError(f"eager model gives {len(eager)} outputs, ONNX {len(onnx_outputs)}")
    worst = 0.0
    for index, (mine, theirs) in enumerate(zip(eager, onnx_outputs)):
        if mine.shape != theirs.shape:
            raise ValueError(f"output {index}: eager shape {mine.shape}, ONNX shape {theirs.shape}")
        if mine.size:
            diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64)).max()
            worst = max(worst, float(diff))
    return worst


def run_opencv_dnn(
    path: str | Path, blob: np.ndarray | Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Run an ONNX file with OpenCV's DNN module (``cv2.dnn.readNetFromONNX``), CPU backend.

    Args:
        path: the ``.onnx`` file.
        blob: float32 NCHW input (e.g. from ``cv2.dnn.blobFromImage``), or ``{input name: array}``.
    Returns:
        One array per output, in the ONNX file's output order.
    Raises:
        UserError: OpenCV cannot parse the model (not every ONNX operator is supported).
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise UserError("ONNX file not found", path=path, fix="run the export first")
    try:
        net = cv2.dnn.readNetFromONNX(str(path))
    except cv2.error as err:
        # OpenCV nests messages; the innermost "error: (code) text" says what is unsupported.
        reasons = re.findall(r"error: \(([^)]*)\) ([^\n]*)", str(err))
        reason = f"{reasons[-1][0]}: {reasons[-1][1]}" if reasons else str(err).strip()
        raise UserError(
            f"OpenCV DNN cannot read this model ({reason[:200]})",
            path=path,
            fix="use ONNX Runtime (detseg.export.ort_session), or export a simpler graph",
        ) from err
    if isinstance(blob, Mapping):
        for name, array in blob.items():
            net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    else:
        net.setInput(np.ascontiguousarray(blob, dtype=np.float32))
    names = list(net.getUnconnectedOutLayersNames())
    graph_names = _onnx_output_names(path)
    if sorted(graph_names) == sorted(names):
        names = graph_names  # OpenCV lists outputs in its own order; use the file's
    outputs = net.forward(names)
    return [np.asarray(output) for output in outputs]


def _onnx_output_names(path: Path) -> list[str]:
    """Names of the graph outputs of an ONNX file, in order."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [output.name for output in model.graph.output]


def match_detections(
    a: Mapping[str, Any], b: Mapping[str, Any], iou_threshold: float = 0.5
) -> dict[str, Any]:
    """Match two sets of detections of the same image and measure how far matched pairs differ.

    Greedy, like COCO matching: ``a``'s detections in decreasing score take the unmatched detection
    of ``b`` with the same label and the highest IoU, if that IoU >= ``iou_threshold``.

    Args:
        a, b: ``{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N]}`` and optionally
            ``"masks": [N, 1, H, W]`` or ``[N, H, W]`` (torch tensors or numpy arrays).
        iou_threshold: minimum IoU of a match.
    Returns:
        ``{"count_a", "count_b", "matched", "max_box_err", "max_score_err", "max_mask_err"}``: the
        errors are max abs differences over matched pairs (box coordinates in pixels), ``None``
        when nothing matched (``max_mask_err`` also when either side has no masks).
    """
    boxes_a = _to_numpy(a["boxes"]).astype(np.float64).reshape(-1, 4)
    boxes_b = _to_numpy(b["boxes"]).astype(np.float64).reshape(-1, 4)
    scores_a = _to_numpy(a["scores"]).astype(np.float64).reshape(-1)
    scores_b = _to_numpy(b["scores"]).astype(np.float64).reshape(-1)
    labels_a = _to_numpy(a["labels"]).astype(np.int64).reshape(-1)
    labels_b = _to_numpy(b["labels"]).astype(np.int64).reshape(-1)
    iou = np.nan_to_num(box_iou(boxes_a, boxes_b))  # [Na, Nb]; 0/0 of empty boxes -> 0
    iou[labels_a[:, None] != labels_b[None, :]] = -1.0
    pairs: list[tuple[int, int]] = []
    taken = np.zeros(len(boxes_b), dtype=bool)
    for index in np.argsort(-scores_a, kind="stable"):
        if not len(boxes_b):
            break
        candidates = np.where(taken, -1.0, iou[index])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            taken[best] = True
            pairs.append((int(index), best))
    result: dict[str, Any] = {
        "count_a": len(boxes_a),
        "count_b": len(boxes_b),
        "matched": len(pairs),
        "max_box_err": None,
        "max_score_err": None,
        "max_mask_err": None,
    }
    if pairs:
        rows_a, rows_b = (np.array(side) for side in zip(*pairs))
        result["max_box_err"] = float(np.abs(boxes_a[rows_a] - boxes_b[rows_b]).max())
        result["max_score_err"] = float(np.abs(scores_a[rows_a] - scores_b[rows_b]).max())
        if a.get("masks") is not None and b.get("masks") is not None:
            masks_a = _to_numpy(a["masks"]).astype(np.float64)
            masks_b = _to_numpy(b["masks"]).astype(np.float64)
            result["max_mask_err"] = float(np.abs(masks_a[rows_a] - masks_b[rows_b]).max())
    return result


def single_pixel_convs_as_1x1(module: nn.Module, example: Tensor) -> list[str]:
    """Replace, in place, each ``Conv2d`` that sees a 1 x 1 map in ``module(example)`` by the
    1 x 1 convolution with its kernel's centre tap (same groups, bias, in and out channels).

    A k x k convolution with "same" zero padding (``dilation * (k - 1) / 2`` per side, any stride)
    on a single pixel multiplies that pixel by the centre tap only; the other taps see zeros. So
    the module computes the same function at this input size, with smaller kernels.

    Why: OpenCV DNN 4.14 (its depthwise kernel ``depthWiseBlockConv2D``) handles an output row that
    needs padding both above and below (input height 1, 3 x 3 kernel) by dropping only the top
    kernel row: the bottom row reads one plane further, the next channel's pixels, instead of the
    padding's zeros; the left-border column does the same with width 1. On a [1, C, 1, 1] input its
    channel c gets ``w11 x[c] + (w12 + w21) x[c + 1] + w22 x[c + 2]`` (pinned in
    tests/test_export.py). SSDlite320's last map is 1 x 1: both heads' depthwise convolutions there
    hit it (04's ``SSDBody.exportable`` and the core's SSDlite test use this function).

    Args:
        module: run in eval mode on ``example`` (its modes are restored); changed in place.
        example: an input of the size the module will be exported at, e.g. [1, 3, 320, 320].
    Returns:
        The names of the replaced convolutions (``module.get_submodule`` names).
    """
    import torch
    from torch import nn

    sizes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(_conv: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
            sizes.setdefault(name, tuple(inputs[0].shape[-2:]))

        return hook

    hooks = [conv.register_forward_hook(record(name)) for name, conv in module.named_modules()
             if isinstance(conv, nn.Conv2d)]  # fmt: skip
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.training = training
    replaced = []
    for name, size in sizes.items():
        conv = module.get_submodule(name)
        kernel = tuple(conv.kernel_size)
        same = tuple(d * (k - 1) // 2 for k, d in zip(kernel, conv.dilation))
        if size != (1, 1) or kernel == (1, 1) or conv.padding_mode != "zeros":
            continue
        if any(k % 2 == 0 for k in kernel) or tuple(conv.padding) != same:
            continue
        centre = conv.weight.detach()[:, :, kernel[0] // 2, kernel[1] // 2]  # [out, in / groups]
        one_by_one = nn.Conv2d(conv.in_channels, conv.out_channels, 1, groups=conv.groups,
                               bias=conv.bias is not None)  # fmt: skip
        with torch.no_grad():
            one_by_one.weight.copy_(centre[:, :, None, None])
            if conv.bias is not None:
                one_by_one.bias.copy_(conv.bias)
        one_by_one.train(conv.training)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, one_by_one)
        replaced.append(name)
    return replaced


def time_inference(
    fn: Callable[..., Any],
    inputs: Any,
    warmup: int = 3,
    repeats: int = 20,
    *,
    sync: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Time ``fn(inputs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Args:
        fn: called as ``fn(inputs)``, e.g. ``model`` or ``lambda x: session.run(None, x)``.
        inputs: its one argument.
        sync: called after each call inside the timed region (``torch.cuda.synchronize`` on CUDA).
    Returns:
        ``{"median_ms", "p10", "p90", "repeats"}``; p10 / p90 are the 10th / 90th percentile in ms.
    """
    timing = time_it(lambda: fn(inputs), warmup=warmup, repeats=repeats, sync=sync)
    return {
        "median_ms": timing["median_s"] * 1000.0,
        "p10": timing["p10_s"] * 1000.0,
        "p90": timing["p90_s"] * 1000.0,
        "repeats": repeats,
    }
