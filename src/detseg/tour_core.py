"""The core steps of ``detseg tour``: each one a quick path through one part of the core.

Every step is ``run_*(out_dir: Path) -> dict``: metric name -> value, and ``"pictures"``, the
image files it wrote into ``out_dir`` (see :mod:`detseg.cli.tour_cmd`). They use only built-in
data (generated on first use under :func:`detseg.settings.data_root`) and take seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOUR_SEED = 0
RECIPE = "shapes"


def _val_json(folder: Path) -> Path:
    return folder / "annotations" / "instances_val.json"


def run_data(out_dir: Path) -> dict[str, Any]:
    """Generate (or reuse) the built-in ``shapes`` dataset and draw a few validation images.

    Returns:
        ``{"train_images", "val_images", "val_objects", "classes", "pictures": [grid PNG]}``.
    """
    from detseg.data import recipes
    from detseg.data.imageio import read_image
    from detseg.viz import draw_detections, save_grid

    train = recipes.load(RECIPE, seed=TOUR_SEED, split="train")
    val = recipes.load(RECIPE, seed=TOUR_SEED, split="val")
    shown = [
        draw_detections(read_image(val.image_path(r)), r.boxes, r.labels, class_names=val.classes)
        for r in val.records[:8]
    ]
    grid = save_grid(shown, out_dir / "val_images.png", ncols=4)
    return {
        "train_images": len(train),
        "val_images": len(val),
        "val_objects": sum(len(r.boxes) for r in val.records),
        "classes": len(val.classes),
        "pictures": [grid],
    }


def run_validate(out_dir: Path) -> dict[str, Any]:
    """Validate both layouts of the ``shapes`` dataset: the COCO JSON (val, images decoded) and
    the YOLO export (every split, label files only).

    Returns:
        ``{"coco_errors", "coco_warnings", "yolo_errors", "yolo_warnings", "images_checked"}``;
        the reports' summaries are written to ``out_dir/report.txt``.
    """
    from detseg.data import recipes
    from detseg.data.validate import validate

    folder = recipes.ensure(RECIPE, seed=TOUR_SEED)
    coco = validate(_val_json(folder), "coco")
    yolo = validate(folder / "yolo" / "data.yaml", "yolo", check_images=False)
    lines = [coco.summary(), *map(str, coco.problems), yolo.summary(), *map(str, yolo.problems)]
    (out_dir / "report.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "coco_errors": len(coco.errors),
        "coco_warnings": len(coco.warnings),
        "yolo_errors": len(yolo.errors),
        "yolo_warnings": len(yolo.warnings),
        "images_checked": coco.num_images + yolo.num_images,
    }


def perturbed_detections(
    gt: dict[str, Any], *, seed: int = TOUR_SEED, recall: float = 0.9, jitter: float = 0.05
) -> list[dict[str, Any]]:
    """A fake detector's output from COCO ground truth: a known amount of error, so a known-ish mAP.

    Each object is found with probability ``recall``, its box corners moved by Gaussian noise of
    ``jitter`` times the box size, scored in [0.3, 1); each image also gets one false alarm (a
    random box and class, scored in [0, 0.6)).

    Args:
        gt: COCO instances dict (``images``, ``annotations``, ``categories``).
    Returns:
        COCO results: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    category_ids = [c["id"] for c in gt["categories"]]
    detections = []
    for ann in gt["annotations"]:
        if rng.uniform() >= recall:
            continue
        x, y, w, h = ann["bbox"]
        x1, y1, x2, y2 = np.array([x, y, x + w, y + h]) + rng.normal(0, jitter, 4) * [w, h, w, h]
        detections.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [float(x1), float(y1), float(max(x2 - x1, 1.0)), float(max(y2 - y1, 1.0))],
                "score": float(rng.uniform(0.3, 1.0)),
            }
        )
    for image in gt["images"]:
        w, h = rng.uniform(0.1, 0.4, 2) * [image["width"], image["height"]]
        x, y = rng.uniform(0, 1, 2) * [image["width"] - w, image["height"] - h]
        detections.append(
            {
                "image_id": image["id"],
                "category_id": int(rng.choice(category_ids)),
                "bbox": [float(x), float(y), float(w), float(h)],
                "score": float(rng.uniform(0.0, 0.6)),
            }
        )
    return detections


def baseline_detections(dataset: Any) -> list[dict[str, Any]]:
    """COCO results of the learning-free :func:`detseg.data.baseline.naive_baseline` on a dataset
    read from COCO (labels map back to ``dataset.category_ids``)."""
    from detseg.data.baseline import naive_baseline
    from detseg.data.imageio import read_image

    detections = []
    for record in dataset.records:
        boxes, scores, labels = naive_baseline(read_image(dataset.image_path(record)))
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            detections.append(
                {
                    "image_id": record.image_id,
                    "category_id": dataset.category_ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return detections


def run_eval(out_dir: Path) -> dict[str, Any]:
    """COCO-evaluate two detectors on the ``shapes`` val split: a fake one that sees the answers
    (:func:`perturbed_detections`) and the learning-free colour-threshold baseline, the bar a
    trained model must clear.

    Returns:
        ``"fake_AP"``, ``"fake_AP50"``, ``"fake_AP75"``, ``"fake_AR100"``, ``"baseline_AP"`` and
        ``"baseline_AP50"``, and ``"pictures"``: PR curves of both. The full results are written
        to ``out_dir/coco_eval.json``.
    """
    import json

    from detseg.data import recipes
    from detseg.metrics import evaluate_coco
    from detseg.viz import plot_pr_curves

    folder = recipes.ensure(RECIPE, seed=TOUR_SEED)
    gt = json.loads(_val_json(folder).read_text(encoding="utf-8"))
    fake = evaluate_coco(gt, perturbed_detections(gt), iou_type="bbox")
    val = recipes.load(RECIPE, seed=TOUR_SEED, split="val")
    baseline = evaluate_coco(gt, baseline_detections(val), iou_type="bbox")
    results = {"fake_detector": fake.to_json(), "naive_baseline": baseline.to_json()}
    (out_dir / "coco_eval.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    names = {c["id"]: c["name"] for c in gt["categories"]}
    pictures = []
    for label, result in (("fake_detector", fake), ("naive_baseline", baseline)):
        curves = result.pr_curves(iou_threshold=0.5)
        recall = next(iter(curves.values()))[0]
        precisions = {names[cat]: precision for cat, (_, precision) in curves.items()}
        title = f"{label.replace('_', ' ')}, IoU 0.5"
        pictures.append(plot_pr_curves(recall, precisions, out_dir / f"pr_{label}.png", title))
    return {
        **{f"fake_{key}": fake.stats[key] for key in ("AP", "AP50", "AP75", "AR100")},
        "baseline_AP": baseline.stats["AP"],
        "baseline_AP50": baseline.stats["AP50"],
        "pictures": pictures,
    }


def run_export(out_dir: Path) -> dict[str, Any]:
    """Export a small CNN to ONNX, check ONNX Runtime against eager PyTorch, time both.

    The parity check covers the traced [1, 3, 64, 64] input and two fresh batches it never saw
    (3 images of uniform noise, 2 of brighter Gaussian noise: other batch sizes, other values).

    Returns:
        ``{"max_abs_diff" (traced input), "max_abs_diff_fresh" (both fresh batches),
        "fresh_images", "fresh_classes_matched" (images whose top class is the same in both),
        "eager_ms", "onnxruntime_ms", "onnx_kb"}``; the times are of the traced input.
    """
    import torch
    from torch import nn

    from detseg.bench import time_it
    from detseg.export import check_parity, export_onnx, ort_run, ort_session

    torch.manual_seed(TOUR_SEED)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 5),
    ).eval()
    images = torch.rand(1, 3, 64, 64)
    path = export_onnx(
        model,
        images,
        out_dir / "small_cnn.onnx",
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )
    session = ort_session(path, threads=1)
    max_abs_diff = check_parity(model, session, images)
    generator = torch.Generator().manual_seed(TOUR_SEED + 1)
    fresh = [torch.rand(3, 3, 64, 64, generator=generator)]
    fresh.append(0.5 + 2 * torch.randn(2, 3, 64, 64, generator=generator))
    max_abs_diff_fresh, classes_matched = 0.0, 0
    for batch in fresh:
        max_abs_diff_fresh = max(max_abs_diff_fresh, check_parity(model, session, batch))
        with torch.no_grad():
            eager_classes = model(batch).argmax(1).numpy()
        classes_matched += int((ort_run(session, batch)[0].argmax(1) == eager_classes).sum())
    with torch.no_grad():
        eager = time_it(lambda: model(images), warmup=3, repeats=20)
    onnx = time_it(lambda: ort_run(session, images), warmup=3, repeats=20)
    return {
        "max_abs_diff": max_abs_diff,
        "max_abs_diff_fresh": max_abs_diff_fresh,
        "fresh_images": sum(len(batch) for batch in fresh),
        "fresh_classes_matched": classes_matched,
        "eager_ms": eager["median_s"] * 1e3,
        "onnxruntime_ms": onnx["median_s"] * 1e3,
        "onnx_kb": round(path.stat().st_size / 1024, 1),
    }
