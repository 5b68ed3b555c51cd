"""Load a detector (official darknet weights, a darknet pair, or a train.py checkpoint) and run it
on images: letterbox, forward, decode, class-wise NMS, boxes back in the image's pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from darknet import Darknet, load_weights
from darknet_cfg import CFG_DIR, OFFICIAL_CFGS, parse_cfg, parse_cfg_text, read_names

from detseg.data.letterbox import letterbox, unletterbox_boxes
from detseg.engine.checkpoint import load_checkpoint, model_state
from detseg.errors import UserError
from detseg.yolo_decode import postprocess


@dataclass
class Detector:
    """A darknet model ready for images.

    Attributes:
        model: the network (eval mode). classes: names per label. image_size: square input side.
        score_threshold, iou_threshold: of :func:`detseg.yolo_decode.postprocess`.
    """

    model: Darknet
    classes: list[str]
    image_size: int
    device: torch.device
    score_threshold: float = 0.25
    iou_threshold: float = 0.45

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """RGB uint8 [H, W, 3] -> ``{"boxes" float32 [K, 4] xyxy image pixels, "scores", "labels"}``."""
        canvas, scale, pad = letterbox(image, self.image_size)
        batch = torch.from_numpy(canvas).permute(2, 0, 1)[None].float().div(255).to(self.device)
        raws = self.model(batch)
        decoded = self.model.decode(raws)
        found = postprocess(
            decoded, score_threshold=self.score_threshold, iou_threshold=self.iou_threshold
        )[0]
        boxes = unletterbox_boxes(found["boxes"].cpu(), scale, pad, image.shape[:2])
        return {
            "boxes": boxes.numpy().astype(np.float32),
            "scores": found["scores"].cpu().numpy(),
            "labels": found["labels"].cpu().numpy(),
        }


def load_trained(path: str | Path, device: torch.device) -> tuple[Darknet, dict[str, Any]]:
    """A ``train.py`` checkpoint -> (model, config); the cfg text inside rebuilds the model."""
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config") or {}
    if "cfg_text" not in config:
        raise UserError(
            "checkpoint has no darknet cfg in its config (not written by this folder's train.py)",
            path=path, fix="pass a best.pt / last.pt of 02_yolo_v3_darknet/train.py",
        )  # fmt: skip
    model = Darknet(parse_cfg_text(config["cfg_text"], str(path)))
    model.load_state_dict(model_state(checkpoint))
    return model.to(device).eval(), config


def load_detector(
    *,
    device: torch.device,
    weights: str | Path | None = None,
    cfg: str | Path | None = None,
    darknet_weights: str | Path | None = None,
    names: str | Path | None = None,
    image_size: int | None = None,
) -> Detector:
    """Either ``weights`` (a train.py checkpoint) or ``cfg`` + ``darknet_weights`` (a .weights file,
    or ``"official"`` for darknet's COCO weights of an official cfg, downloaded once)."""
    if cfg is not None:
        size = image_size
        spec = parse_cfg(cfg, size=size)
        model = Darknet(spec)
        if darknet_weights == "official":
            from official_weights import official_weights

            if str(cfg) not in OFFICIAL_CFGS:
                raise UserError("--darknet-weights official needs --cfg yolov3, yolov3-tiny or "
                                "yolov3-spp", fix="or pass the path of a .weights file")  # fmt: skip
            darknet_weights = official_weights(str(cfg))
        if darknet_weights is None:
            raise UserError("--cfg needs --darknet-weights (a .weights file or 'official')",
                            fix="e.g. --cfg yolov3-tiny --darknet-weights official")  # fmt: skip
        load_weights(model, darknet_weights)
        names_path = Path(names) if names is not None else CFG_DIR / "coco.names"
        classes = read_names(names_path)
        if len(classes) != model.num_classes:
            classes = [str(i) for i in range(model.num_classes)]
        return Detector(model.to(device).eval(), classes, spec.height, device)
    if weights is None:
        raise UserError(
            "no model given", fix="pass --weights best.pt, or --cfg and --darknet-weights"
        )
    model, config = load_trained(weights, device)
    return Detector(model, list(config["classes"]), int(config["image_size"]), device)
