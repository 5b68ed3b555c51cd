"""Benchmark harness: a visible dict of cases, a timing helper, a machine fingerprint, results JSON
and the README table generated from every results file.

A *case* is a function with no arguments that returns a dict of numbers, e.g.::

    def case_iou() -> dict:
        ours = time_it(lambda: box_iou(a, b))
        ref = time_it(lambda: torchvision.ops.box_iou(a, b))
        return {"ours_ms": ours["median_s"] * 1e3, "torchvision_ms": ref["median_s"] * 1e3,
                "ratio": ours["median_s"] / ref["median_s"], "main": "ratio"}

The optional ``"main"`` entry names the headline number shown in the README table (default:
``ratio`` or ``speedup`` if present, else the first numeric entry). Units come from the key's
suffix: ``_ms``, ``_s``, ``_mb``; ``ratio`` / ``speedup`` are shown as ``1.23x``. Convention:
``ratio`` = our time / the reference's time (below 1: ours is faster); ``speedup`` = the slow
path's time / the fast path's. A case should shrink its sizes in smoke mode
(:func:`detseg.settings.smoke_mode`) and synchronise the device itself if it times GPU work.

Cases are named ``"path/to/file.py:function"`` (relative to the repository root, loaded by file path)
or ``"package.module:function"`` (imported), so the core never imports an example folder at import
time. An example adds its own entry to :data:`CASES`, e.g.
``"01-maskrcnn-step": Case("01_mask_r_cnn_fine_tuning/bench_cases.py:case_train_step", ...)``.

Results go to ``benchmarks/results/<machine-slug>-<YYYY-MM-DD>.json`` (one file per machine and
day; a later run on the same day updates the cases it ran). :func:`render_readme` rebuilds the
table between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` from all of them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from detseg.errors import UserError

START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    Args:
        target: ``"file.py:function"`` (relative to the repo root) or ``"module:function"``.
        group: ``"core"`` or the example folder it belongs to, e.g. ``"01_mask_r_cnn_fine_tuning"``.
        description: one line shown by ``detseg bench list`` and in the README table.
    """

    target: str
    group: str
    description: str


# name -> case; a visible dict. Examples add theirs here, pointing into their own folder.
CASES: dict[str, Case] = {
    "boxes-iou": Case(
        "benchmarks/bench_boxes.py:case_iou",
        "core",
        "pairwise IoU: detseg.boxes vs torchvision.ops",
    ),
    "boxes-nms": Case(
        "benchmarks/bench_boxes.py:case_nms", "core", "NMS: detseg.boxes vs torchvision.ops.nms"
    ),
    "metrics-coco-eval": Case(
        "benchmarks/bench_metrics.py:case_coco_eval",
        "core",
        "COCO bbox evaluation: detseg.metrics vs pycocotools COCOeval",
    ),
    "engine-ddp": Case(
        "benchmarks/bench_engine.py:case_ddp_vs_single",
        "core",
        "training throughput: DDP (2 processes) vs a single process",
    ),
    "engine-checkpoint": Case(
        "benchmarks/bench_engine.py:case_checkpoint_size",
        "core",
        "size of last.pt for Mask R-CNN R50-FPN (2 classes)",
    ),
    "export-ort": Case(
        "benchmarks/bench_export.py:case_ort_vs_eager",
        "core",
        "small CNN inference: ONNX Runtime vs eager PyTorch",
    ),
    "data-generate": Case(
        "benchmarks/bench_data.py:case_generate", "core", "synthetic dataset generation speed"
    ),
    "01-maskrcnn-slim-train-step": Case(
        "01_mask_r_cnn_fine_tuning/bench_cases.py:case_train_step",
        "01_mask_r_cnn_fine_tuning",
        "slim Mask R-CNN: one SGD step, 4 pedestrian images at 256 px",
    ),
    "01-maskrcnn-slim-ort": Case(
        "01_mask_r_cnn_fine_tuning/bench_cases.py:case_ort_vs_eager",
        "01_mask_r_cnn_fine_tuning",
        "slim Mask R-CNN inference: ONNX Runtime vs eager PyTorch",
    ),
    "01-summary": Case(
        "01_mask_r_cnn_fine_tuning/bench_cases.py:case_summary",
        "01_mask_r_cnn_fine_tuning",
        "default run (train.py, 16 epochs) to the segm AP50 bar, then ONNX export and timing",
    ),
    "02-yolov3-tiny-onnx": Case(
        "02_yolo_v3_darknet/bench_cases.py:case_ort_vs_eager",
        "02_yolo_v3_darknet",
        "YOLOv3-tiny 416 inference: ONNX Runtime and OpenCV DNN (darknet files) vs eager",
    ),
    "02-summary": Case(
        "02_yolo_v3_darknet/bench_cases.py:case_summary",
        "02_yolo_v3_darknet",
        "YOLOv3-tiny (train.py defaults) to the mAP@0.5 bar, then ONNX export and timing",
    ),
    "03-yolov7-tiny-onnx": Case(
        "03_yolo_v7_tutorial/bench_cases.py:case_ort_vs_eager",
        "03_yolo_v7_tutorial",
        "YOLOv7-tiny 320 px (fused, before NMS): ONNX Runtime vs eager, FPS",
    ),
    "03-summary": Case(
        "03_yolo_v7_tutorial/bench_cases.py:case_summary",
        "03_yolo_v7_tutorial",
        "YOLOv7-tiny 320 px (train.py defaults) to the mAP@0.5 bar, then export.py timing",
    ),
    "04-realtime-fps": Case(
        "04_basic_object_detection/bench_cases.py:case_realtime_fps",
        "04_basic_object_detection",
        "FPS on 320 px frames: SSDlite eager, its ONNX body on ORT / OpenCV DNN, HOG, Haar",
    ),
    "04-single-object-cache": Case(
        "04_basic_object_detection/bench_cases.py:case_feature_cache",
        "04_basic_object_detection",
        "single-object heads: s / epoch on cached features vs the seed's loop",
    ),
    "04-summary": Case(
        "04_basic_object_detection/bench_cases.py:case_summary",
        "04_basic_object_detection",
        "SSDlite320 (train_detector.py defaults) to the mAP@0.5 bar, then export_detector.py",
    ),
    "05-unet-onnx": Case(
        "05_unet_segmentation/bench_cases.py:case_ort_vs_eager",
        "05_unet_segmentation",
        "U-Net (salt) inference: ONNX Runtime vs eager",
    ),
    "05-summary": Case(
        "05_unet_segmentation/bench_cases.py:case_summary",
        "05_unet_segmentation",
        "salt U-Net (train.py --dataset salt) to the IoU bar, then ONNX export and timing",
    ),
    "06-selective-search": Case(
        "06_rcnn_tensorflow/bench_cases.py:case_selective_search",
        "06_rcnn_tensorflow",
        "selective search (fast): ours from scratch vs OpenCV contrib, CPU time per image",
    ),
    "06-summary": Case(
        "06_rcnn_tensorflow/bench_cases.py:case_summary",
        "06_rcnn_tensorflow",
        "R-CNN (train_rcnn.py defaults, dataset building included) to the mAP@0.5 bar",
    ),
    "07-keras-onnx": Case(
        "07_bbox_regression_tensorflow/bench_cases.py:case_ort_vs_keras",
        "07_bbox_regression_tensorflow",
        "07b Keras regressor inference: ONNX Runtime (Keras' ONNX export) vs a Keras call",
    ),
    "07-summary": Case(
        "07_bbox_regression_tensorflow/bench_cases.py:case_summary",
        "07_bbox_regression_tensorflow",
        "07b (train_multiclass.py --backbone small) to the IoU bar, then exports and timing",
    ),
}


def repo_root() -> Path:
    """The repository root: the checkout holding this package (src layout), else the current folder."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


# ---------------------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the duration (a case may import its siblings)."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def load_target(target: str, *, root: Path | None = None) -> Callable[..., Any]:
    """Resolve ``"path/file.py:function"`` (loaded by path) or ``"module:function"`` (imported).

    Raises:
        UserError: malformed target, missing file, or no such function in it.
    """
    if target.count(":") != 1:
        raise UserError(
            f"bad target {target!r}", fix="write 'path/to/file.py:function' or 'module:function'"
        )
    where, func_name = target.split(":")
    if where.endswith(".py"):
        path = (root or repo_root()) / where
        if not path.is_file():
            raise UserError(
                "file not found",
                path=path,
                fix="check the path in the registry that names it (bench CASES or tour TOUR)",
            )
        module_name = "detseg_loaded_" + re.sub(r"\W", "_", str(Path(where).with_suffix("")))
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        with _on_sys_path(path.parent):
            spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UserError(f"no function {func_name!r} in {where}", fix="check the target's name")
    return func


# ---------------------------------------------------------------------------------------- timing


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile of ``values`` with linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_it(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 5,
    sync: Callable[[], Any] | None = None,
) -> dict[str, float | int]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Args:
        fn: the work, called with no arguments.
        warmup: untimed calls first (caches, JIT, lazy init).
        repeats: timed calls, at least 1.
        sync: called after each call inside the timed region, e.g. ``torch.cuda.synchronize``.
    Returns:
        ``{"median_s", "min_s", "max_s", "iqr_s", "p10_s", "p90_s", "repeats"}``; ``iqr_s`` is the
        spread between the 25th and 75th percentile (0 for fewer than 2 repeats); ``p10_s`` /
        ``p90_s`` are the 10th / 90th percentiles (linear interpolation).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    times: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    iqr = 0.0
    if repeats >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        iqr = q3 - q1
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "iqr_s": iqr,
        "p10_s": _percentile(times, 10),
        "p90_s": _percentile(times, 90),
        "repeats": repeats,
    }


# ---------------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        import subprocess

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return None


def _version(*distributions: str) -> str | None:
    """Installed version of the first distribution found (no import: TensorFlow takes seconds)."""
    for name in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return None


def _gpu() -> str | None:
    if _version("torch") is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return f"{_cpu_model()} (MPS)"
    return None


def machine_fingerprint() -> dict[str, Any]:
    """What a timing depends on: CPU, cores, RAM, GPU, OS, Python and library versions.

    Returns:
        ``{"cpu", "cores", "ram_gb", "gpu", "os", "python", "versions": {name: version | None}}``.
        Missing libraries are ``None``; torch is imported only to name the GPU.
    """
    versions = {
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "tensorflow": _version("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
        "onnxruntime": _version("onnxruntime", "onnxruntime-gpu"),
        "opencv": _version(
            "opencv-contrib-python",
            "opencv-python",
            "opencv-python-headless",
            "opencv-contrib-python-headless",
        ),
    }
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "gpu": _gpu(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


def machine_slug(fingerprint: dict[str, Any]) -> str:
    """Short file-name-safe name of a machine: the GPU if any, else the CPU model and core count.

    E.g. ``nvidia-h100-80gb-hbm3`` or ``amd-epyc-7b13-2cpu``.
    """
    cpu = re.sub(
        r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@\s*[\d.]+\s*ghz",
        " ",
        str(fingerprint.get("cpu") or "cpu"),
        flags=re.IGNORECASE,
    )
    name = fingerprint.get("gpu") or f"{cpu} {fingerprint.get('cores') or 1}cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:48].strip("-") or "machine"


# ---------------------------------------------------------------------------------------- running


def check_case_names(names: list[str], cases: dict[str, Case]) -> None:
    """Raise :class:`UserError` naming the first unknown case."""
    for name in names:
        if name not in cases:
            raise UserError(
                f"unknown benchmark case {name!r}", fix="run 'detseg bench list' to see the names"
            )


def run_case(name: str, case: Case, *, root: Path | None = None) -> dict[str, Any]:
    """Load and run one case; a failure is recorded (``"error"``), not raised.

    Returns:
        ``{"group", "description", "target", "results": dict, "main": key | None, "elapsed_s",
        "error": str | None}``.
    """
    record: dict[str, Any] = {
        "group": case.group,
        "description": case.description,
        "target": case.target,
        "results": {},
        "main": None,
        "elapsed_s": 0.0,
        "error": None,
    }
    start = time.perf_counter()
    try:
        fn = load_target(case.target, root=root)
        where = case.target.split(":")[0]
        case_folder = ((root or repo_root()) / where).parent if where.endswith(".py") else None
        with _on_sys_path(case_folder) if case_folder else contextlib.nullcontext():
            output = fn()
        results = dict(output) if isinstance(output, dict) else {"value": output}
        main = results.pop("main", None)
        numeric = [k for k, v in results.items() if isinstance(v, (int, float))]
        record["results"] = results
        preferred = [k for k in ("ratio", "speedup") if k in numeric] + numeric
        record["main"] = main if main in results else (preferred[0] if preferred else None)
    except Exception as err:  # one failing case must not lose the others' numbers
        record["error"] = (
            err.message() if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        )
    record["elapsed_s"] = round(time.perf_counter() - start, 3)
    return record


def run_cases(
    names: list[str] | None = None,
    *,
    out_dir: Path | None = None,
    cases: dict[str, Case] | None = None,
    root: Path | None = None,
    date: str | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run the named cases (all by default) and write ``<out_dir>/<machine-slug>-<date>.json``.

    An existing file for the same machine and day keeps the cases not run this time.

    Args:
        names: case names; ``None`` runs every case in ``cases``.
        out_dir: default ``<repo>/benchmarks/results``.
        cases: the registry, default :data:`CASES`.
        root: folder that file targets are relative to, default :func:`repo_root`.
        date: ``YYYY-MM-DD``, default today.
        progress: called as ``progress(name, record)`` after each case.
    Returns:
        (path written, the document written).
    """
    cases = CASES if cases is None else cases
    names = list(cases) if not names else list(names)
    check_case_names(names, cases)
    root = root or repo_root()
    out_dir = out_dir or root / "benchmarks" / "results"
    fingerprint = machine_fingerprint()
    slug = machine_slug(fingerprint)
    date = date or _dt.date.today().isoformat()
    path = Path(out_dir) / f"{slug}-{date}.json"
    previous = _read_result(path)["cases"] if path.is_file() else {}
    records = {}
    for name in names:
        records[name] = run_case(name, cases[name], root=root)
        if progress is not None:
            progress(name, records[name])
    document = {
        "slug": slug,
        "date": date,
        "machine": fingerprint,
        "cases": {**previous, **records},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path, document


# ---------------------------------------------------------------------------------------- table


def _read_result(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(
            f"cannot read benchmark result: {err}", path=path, fix="delete or fix it"
        ) from err
    if not isinstance(document, dict) or not {"slug", "date", "cases"} <= set(document):
        raise UserError(
            "not a benchmark result (needs 'slug', 'date', 'cases')",
            path=path,
            fix="delete or fix it",
        )
    return document


def format_value(key: str, value: Any) -> str:
    """Format a number by its key's unit: ``_ms`` -> ``12.3 ms``, ``ratio`` -> ``1.85x`` ..."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    lowered = key.lower()
    number = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if lowered.endswith("_ms"):
        return f"{number} ms"
    if lowered.endswith("_s"):
        return f"{number} s"
    if lowered.endswith("_mb"):
        return f"{number} MB"
    if "ratio" in lowered or "speedup" in lowered or lowered.endswith("_x"):
        return f"{value:.3g}x"
    return f"{value:.4g}"


def render_table(result_files: list[Path], *, cases: dict[str, Case] | None = None) -> str:
    """Markdown table: rows = cases, columns = machines; each cell the case's main number.

    For a machine with several result files, the latest date wins per case. Below the table, one
    line per machine says what it is.
    """
    cases = CASES if cases is None else cases
    documents = sorted(
        (_read_result(p) for p in result_files), key=lambda d: (d["date"], d["slug"])
    )
    machines: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, str]] = {}
    measure: dict[str, str] = {}
    what: dict[str, str] = {}
    for document in documents:  # oldest first: later files overwrite
        slug = document["slug"]
        machines[slug] = document
        for name, record in document["cases"].items():
            what[name] = record.get("description", "")
            main = record.get("main")
            if record.get("error"):
                cells.setdefault(name, {})[slug] = "failed"
            elif main is not None and main in record.get("results", {}):
                cells.setdefault(name, {})[slug] = format_value(main, record["results"][main])
                measure[name] = main
    if not cells:
        return "_No benchmark results yet: run `make bench`._"
    order = [n for n in cases if n in cells] + sorted(n for n in cells if n not in cases)
    slugs = sorted(machines)
    lines = [
        "| case | what | number | " + " | ".join(f"`{s}`" for s in slugs) + " |",
        "|---|---|---|" + "---:|" * len(slugs),
    ]
    for name in order:
        row = [f"`{name}`", what.get(name, ""), measure.get(name, "")]
        row += [cells[name].get(slug, "-") for slug in slugs]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "`ratio`: our time / the reference's (below 1: ours is faster); `speedup`: slow path / "
        "fast path; times are medians. Generated by `detseg bench render` from `benchmarks/results/`."
    )
    lines.append("")
    for slug in slugs:
        machine = machines[slug]["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
        gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
        lines.append(
            f"- `{slug}` ({machines[slug]['date']}): {machine.get('cpu')}, {machine.get('cores')} cores, "
            f"{machine.get('ram_gb')} GB RAM{gpu}; {machine.get('os')}, Python {machine.get('python')}; "
            f"{versions}"
        )
    return "\n".join(lines)


def render_readme(readme: Path, results_dir: Path, *, cases: dict[str, Case] | None = None) -> bool:
    """Rewrite the table between the bench markers of ``readme`` from every ``*.json`` in ``results_dir``.

    Everything outside the markers stays byte-identical; rendering twice changes nothing.

    Returns:
        True if the file changed.
    Raises:
        UserError: missing, duplicated or misordered markers.
    """
    fix = f"put the lines '{START_MARKER}' and '{END_MARKER}' (once each) where the table goes"
    try:
        text = readme.read_bytes().decode("utf-8")
    except OSError as err:
        raise UserError(f"cannot read: {err.strerror}", path=readme, fix=fix) from err
    if text.count(START_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise UserError("needs exactly one pair of benchmark markers", path=readme, fix=fix)
    head, rest = text.split(START_MARKER)
    if END_MARKER not in rest:
        raise UserError("the end marker comes before the start marker", path=readme, fix=fix)
    _, tail = rest.split(END_MARKER)
    newline = "\r\n" if "\r\n" in text else "\n"
    files = sorted(Path(results_dir).glob("*.json")) if Path(results_dir).is_dir() else []
    table = render_table(files, cases=cases).replace("\n", newline)
    new_text = f"{head}{START_MARKER}{newline}{table}{newline}{END_MARKER}{tail}"
    new_text = _render_examples(new_text, files, newline, readme)
    if new_text == text:
        return False
    readme.write_bytes(new_text.encode("utf-8"))
    return True


def _render_examples(text: str, files: list[Path], newline: str, readme: Path) -> str:
    """Fill the optional examples table (:mod:`detseg.bench_summary`) between its markers."""
    from detseg import bench_summary

    start, end = bench_summary.START_MARKER, bench_summary.END_MARKER
    if start not in text and end not in text:
        return text
    if text.count(start) != 1 or text.count(end) != 1 or text.index(end) < text.index(start):
        raise UserError(
            "needs exactly one pair of examples-table markers, start before end",
            path=readme,
            fix=f"put the lines '{start}' and '{end}' (once each) where the table goes",
        )
    head, rest = text.split(start)
    _, tail = rest.split(end)
    table = bench_summary.render_examples_table([_read_result(p) for p in files])
    return f"{head}{start}{newline}{table.replace(chr(10), newline)}{newline}{end}{tail}"
