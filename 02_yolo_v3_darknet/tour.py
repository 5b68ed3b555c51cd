"""``detseg tour`` step of this folder: darknet files, OpenCV cross-check, a short training, ONNX.

1. parses the three official cfgs: parameters and weights-file sizes (darknet's own numbers);
2. writes random YOLOv3-tiny weights with our writer, reads them with OpenCV DNN, compares;
3. pretrains YOLOv3-tiny's first 15 layers on shape crops of 300 other scenes (2 epochs; train.py's
   ``yolov3-tiny.conv.15``, shorter), writes them as that partial darknet file, loads it into
   YOLOv3-tiny (adapted to the 5 shape classes, k-means anchors) and trains at 160 x 160 on 300
   built-in ``shapes`` images (YOLO layout) for 3 epochs (train.py's recipe, shorter) through the
   core engine, mAP@0.5 on 60;
4. draws its detections, writes darknet ``.cfg`` / ``.weights`` and exports ONNX with parity.

About 2 minutes on 2 idle CPU cores; seconds in smoke mode. The full recipe (README) trains longer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
TOUR_PRETRAIN_EPOCHS = 2  # train.py's default: 6 epochs of crops of 1000 scenes
TOUR_EPOCHS = 3


def run(out_dir: Path) -> dict[str, Any]:
    """Run the quick path into ``out_dir``.

    Returns:
        ``{"yolov3_parameters", "yolov3_weights_bytes", "opencv_max_abs_diff", "pretrain_s",
        "pretrain_crop_accuracy", "mAP50",
        "train_minutes", "onnx_max_abs_diff", "onnx_matched", "eager_ms", "onnxruntime_ms",
        "opencv_ms", "pictures"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import cv2
    import numpy as np
    import torch

    # only this folder's uniquely named modules: train / detect / export exist in other folders too
    from darknet import build_model, load_weights, randomize, save_weights
    from darknet_cfg import OFFICIAL_CFGS, parse_cfg
    from darknet_pretraining import PretrainConfig, ensure_partial
    from yolo_export import export_and_check
    from yolo_loss import LossConfig
    from yolo_training import (
        build_custom_model,
        dataset_anchors,
        fit,
        load_splits,
        predict_batch,
        save_darknet,
    )

    from detseg import settings
    from detseg.data.yolo_dataset import YoloAugment, YoloDataset
    from detseg.devices import seed_everything
    from detseg.viz import draw_detections, save_grid

    smoke = settings.smoke_mode()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    yolov3 = parse_cfg("yolov3")

    # 2. OpenCV reads what our writer wrote
    size = 64 if smoke else 160
    model = randomize(build_model("yolov3-tiny", size=size), seed=0).eval()
    weights = save_weights(model, out_dir / "random-yolov3-tiny.weights")
    net = cv2.dnn.readNetFromDarknet(str(OFFICIAL_CFGS["yolov3-tiny"]), str(weights))
    images = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    net.setInput(images)
    theirs = net.forward([f"conv_{layer.index - 1}" for layer in model.spec.yolo_layers])
    with torch.no_grad():
        ours = model(torch.from_numpy(images))
    opencv_diff = max(float(np.abs(t - o.numpy()).max()) for t, o in zip(theirs, ours))

    # 3. yolov3-tiny.conv.15 (train.py's start, shorter: 2 epochs of crops of 300 other scenes),
    #    then a short training from it
    splits = load_splits(None, num_images=None if smoke else 300)  # 240 train, 60 val
    pretrain = PretrainConfig(num_images=300, epochs=TOUR_PRETRAIN_EPOCHS)
    if smoke:
        pretrain = PretrainConfig(num_images=16, epochs=1, max_steps=2)
    partial, pretraining = ensure_partial(
        out_dir / "yolov3-tiny.conv.15", pretrain, log=lambda text: None,
        held_out={"detector train": splits.train, "detector val": splits.val},
    )  # fmt: skip
    seed_everything(0)
    anchors = dataset_anchors(splits.train, "yolov3-tiny", size)
    model, cfg_text = build_custom_model("yolov3-tiny", len(splits.classes), anchors=anchors,
                                         image_size=size, scale_xy=2.0)  # fmt: skip
    load_weights(model, partial, layers=15)
    result = fit(
        model, splits, image_size=size, epochs=1 if smoke else TOUR_EPOCHS, batch_size=8,
        lr=2e-3, optimizer_name="adamw",
        loss_config=LossConfig(box_loss="giou", assign="yolov5", obj_target="iou"),  # train.py's
        output_dir=out_dir / "run", device=torch.device("cpu"), progress=False,
        augment=YoloAugment(hflip=0.5, hsv=(0.015, 0.5, 0.3), scale=(0.75, 1.25)),
        config={"cfg_text": cfg_text, "classes": splits.classes, "image_size": size},
    )  # fmt: skip
    final = result["history"][-1]
    save_darknet(model, cfg_text, out_dir, "yolov3-tiny-shapes")

    # 4. pictures and ONNX
    val = YoloDataset(splits.val, size)
    shown = []
    model.eval()
    for index in range(min(8, len(val))):
        image, _ = val[index]
        found = predict_batch(model, image[None], score_threshold=0.3, iou_threshold=0.45)[0]
        picture = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        shown.append(draw_detections(picture, found["boxes"], found["labels"], found["scores"],
                                     class_names=splits.classes))  # fmt: skip
    grid = save_grid(shown, out_dir / "detections.png", ncols=4)
    check = [val[i][0][None] for i in range(min(3, len(val)))]
    onnx = export_and_check(model, out_dir / "yolov3-tiny-shapes.onnx", check, cfg_text=cfg_text,
                            repeats=3 if smoke else 10)  # fmt: skip
    return {
        "yolov3_parameters": yolov3.num_params,
        "yolov3_weights_bytes": yolov3.weights_bytes,
        "opencv_max_abs_diff": opencv_diff,
        "pretrain_s": pretraining["seconds"],
        "pretrain_crop_accuracy": pretraining["crop_accuracy"],
        "mAP50": final["eval"]["mAP50"],
        "train_minutes": sum(e["time"]["epoch_s"] for e in result["history"]) / 60,
        "onnx_max_abs_diff": onnx["max_abs_diff"],
        "onnx_matched": f"{onnx['matched']}/{onnx['detections']}",
        "eager_ms": onnx["eager_ms"],
        "onnxruntime_ms": onnx["onnxruntime_ms"],
        "opencv_ms": onnx["opencv_ms"],
        "pictures": [grid, out_dir / "run" / "training_curves.png"],
    }
