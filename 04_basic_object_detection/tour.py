"""``detseg tour`` step of this folder: a single-object detector trained end to end, the classic
OpenCV detectors on a real photograph, and an SSDlite body on three runtimes.

1. pretrains the small backbone on shape crops of the built-in ``shapes`` scenes (2 epochs), freezes
   it, caches its features of 300 ``single_object`` images and trains the seed's heads on them;
2. runs the Haar face cascade on ``skimage.data.astronaut()`` and times it and HOG on 320 px frames;
3. exports an SSDlite320 body (random weights: speed does not depend on them) to ONNX, checks
   ONNX Runtime and OpenCV DNN against PyTorch, and times the three on 320 px frames.

About 1-2 minutes on 2 CPU cores; seconds in smoke mode.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def run(out_dir: Path) -> dict[str, Any]:
    """Run the quick path into ``out_dir``.

    Returns:
        ``{"single_object_mean_iou", "single_object_accuracy", "seconds_per_epoch_cached",
        "haar_faces_on_astronaut", "onnx_max_abs_diff", "opencv_max_abs_diff", "output_max_abs"
        (the largest raw output, the scale of those differences), "fps": {...},
        "pictures": [...]}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import numpy as np
    import skimage.data
    import torch
    from detection_zoo import build_ssdlite320, calibrate_batchnorm
    from detector_body import DecodeConfig, SSDBody, to_body_input
    from detector_runtime import (
        body_predictor,
        classic_predictor,
        haar_faces,
        time_predictors,
    )

    from detseg import settings
    from detseg.data import recipes
    from detseg.data.imageio import read_image
    from detseg.export import export_onnx, ort_session, run_opencv_dnn
    from detseg.scripts import load_script
    from detseg.viz import draw_detections, save_grid

    smoke = settings.smoke_mode()
    single = load_script(FOLDER, "train_single_object").main(
        ["--num-images", "12" if smoke else "300", "--epochs", "2" if smoke else "40",
         "--pretrain-task", "shape_crops", "--pretrain-epochs", "2", "--no-mirror-train",
         "--output-dir", str(out_dir / "single-object")]
    )  # fmt: skip

    astronaut = skimage.data.astronaut()
    faces = haar_faces(astronaut)
    pictures = [draw_detections(astronaut, faces["boxes"], faces["labels"], faces["scores"],
                                class_names=["", "face"])]  # fmt: skip

    torch.manual_seed(0)
    model = build_ssdlite320(6, width_mult=0.5).eval()
    scenes = recipes.load("shapes", split="val", num_images=16 if smoke else 50)
    frames = [read_image(scenes.image_path(r)) for r in scenes.records[: 3 if smoke else 10]]
    batch = torch.stack([torch.from_numpy(to_body_input(f, 320)[0]) for f in frames])
    # realistic activations for the parity check and the timing; noise images beside the frames so
    # that no channel has zero variance (1 / sqrt(eps) would amplify rounding differences)
    calibrate_batchnorm(model, torch.cat([batch, torch.rand_like(batch)]))
    body = SSDBody(model).eval()
    traced = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    # exported: the same body with the 1 x 1 maps' convolutions as 1 x 1 ones (OpenCV DNN's bug)
    onnx_path = export_onnx(body.exportable(), traced, out_dir / "ssd_body.onnx",
                            input_names=["images"],
                            output_names=["regressions", "logits"])  # fmt: skip
    blob = to_body_input(frames[0], 320)
    with torch.no_grad():
        eager = [t.numpy() for t in body(torch.from_numpy(blob))]
    session = ort_session(onnx_path)
    ort = session.run(None, {"images": blob})
    cv = run_opencv_dnn(onnx_path, blob)
    config = DecodeConfig.from_ssd(model)
    classes = ["__background__", *scenes.classes]
    predictors = [
        body_predictor(runtime, config, classes, body=body, onnx_path=onnx_path)
        for runtime in ("torch", "onnxruntime", "opencv")
    ] + [classic_predictor("hog_people"), classic_predictor("haar_face")]
    resized = [np.ascontiguousarray(f) for f in frames]
    fps = time_predictors(predictors, resized, warmup=1)
    grid = save_grid(pictures, out_dir / "classic.png", ncols=1)
    return {
        "single_object_mean_iou": single["mean_iou"],
        "single_object_accuracy": single["class_accuracy"],
        "seconds_per_epoch_cached": single["seconds_per_epoch"],
        "haar_faces_on_astronaut": len(faces["boxes"]),
        "onnx_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(eager, ort)),
        "opencv_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(eager, cv)),
        "output_max_abs": max(float(np.abs(a).max()) for a in eager),
        "fps": {name: round(row["fps"], 1) for name, row in fps.items()},
        "pictures": [grid, out_dir / "single-object" / "training_curves.png"],
    }
