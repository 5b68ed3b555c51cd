"""The ``build`` functions of :data:`detseg.data.recipes.RECIPES`: draw scenes, call the format writers.

Every function has the signature ``build(out_dir, num_images, seed, params) -> counts`` and draws
image ``i`` from :func:`~detseg.data.synthetic.scene_rng` ``(seed, recipe, i)`` only. Scenes are
generated lazily (one in memory at a time) while the writer consumes them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from detseg.data.formats import cityscapes, coco, csvboxes, kitti_road, pennfudan, tgs, voc, yolo
from detseg.data.synthetic import SHAPE_CLASSES, Scene, scene_rng, shapes_scene
from detseg.data.synthetic_scenes import (
    SINGLE_OBJECT_CLASSES,
    moving_objects,
    pedestrian_scene,
    raccoon_scene,
    single_object_scene,
)
from detseg.data.synthetic_semantic import (
    ROAD_CLASSES,
    STREET_CLASSES,
    road_scene,
    salt_section,
    street_scene,
)
from detseg.data.types import DetectionRecord

ROAD_CATEGORIES = {"um": 1, "umm": 2, "uu": 0}  # KITTI category -> lane markings drawn


def detection_record(scene: Scene, image_id: int, file_name: str) -> DetectionRecord:
    """A :class:`DetectionRecord` of a scene, masks as COCO RLE (``pycocotools.mask.encode``)."""
    height, width = scene.image.shape[:2]
    rles: list[Any] = []
    if len(scene.masks):
        stacked = np.asfortranarray(scene.masks.transpose(1, 2, 0).astype(np.uint8))  # [H, W, N]
        rles = mask_utils.encode(stacked)
    return DetectionRecord(
        image_id, file_name, height, width, scene.boxes, scene.labels, segmentations=list(rles)
    )


def _val_count(num_images: int, fraction: float) -> int:
    """Images held out: ``round(n * fraction)``, at least 1 when there are 2 images or more."""
    return 0 if num_images < 2 else min(num_images - 1, max(1, round(num_images * fraction)))


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _size(rng: np.random.Generator, value: int | tuple[int, int] | list[int]) -> int:
    """A fixed size, or one drawn uniformly from an inclusive ``(low, high)`` range."""
    if isinstance(value, (tuple, list)):
        return int(rng.integers(value[0], value[1] + 1))
    return int(value)


def build_shapes(out: Path, num_images: int, seed: int, params: dict[str, Any]) -> dict[str, int]:
    """COCO JSON per split (+ the YOLO export in ``yolo/`` sharing the same JPEGs by hard link)."""
    classes = list(SHAPE_CLASSES)
    n_val = _val_count(num_images, params["val_fraction"])
    splits = {"train": range(num_images - n_val), "val": range(num_images - n_val, num_images)}
    counts = {"images": num_images, "instances": 0}
    for split, indices in splits.items():
        records: list[DetectionRecord] = []

        def samples(indices: range = indices, records: list = records) -> Iterator[Any]:
            for i in indices:
                scene = shapes_scene(scene_rng(seed, "shapes", i), size=params["size"])
                records.append(detection_record(scene, i + 1, f"{i + 1:012d}.jpg"))
                yield records[-1], scene.image

        coco.write(
            out / "annotations" / f"instances_{split}.json",
            samples(),
            classes,
            image_dir=out / split,
        )
        counts[split] = len(records)
        counts["instances"] += sum(len(r.labels) for r in records)
        if params["yolo"]:
            folder = yolo.SPLIT_FOLDERS[split]
            for record in records:
                _link_or_copy(
                    out / split / record.file_name,
                    out / "yolo" / folder / "images" / record.file_name,
                )
            yolo.write(out / "yolo", [(r, None) for r in records], classes, split=split)
    return counts


def build_pedestrians(
    out: Path, num_images: int, seed: int, params: dict[str, Any]
) -> dict[str, int]:
    """PennFudanPed/: ``FudanPed00001`` ... then ``PennPed00001`` ... (74 / 96 in the real set)."""
    n_fudan = round(num_images * params["fudan_fraction"])
    instances = 0

    def samples() -> Iterator[Any]:
        nonlocal instances
        for i in range(num_images):
            stem = f"FudanPed{i + 1:05d}" if i < n_fudan else f"PennPed{i - n_fudan + 1:05d}"
            rng = scene_rng(seed, "pedestrians", i)
            width = _size(rng, params["width"])
            scene = pedestrian_scene(rng, height=_size(rng, params["height"]), width=width)
            instances += len(scene.labels)
            yield detection_record(scene, i + 1, f"PNGImages/{stem}.png"), scene.image

    pennfudan.write(out / "PennFudanPed", samples())
    return {"images": num_images, "instances": instances}


def build_single_object(
    out: Path, num_images: int, seed: int, params: dict[str, Any]
) -> dict[str, int]:
    """images/<class>/image_0001.jpg + annotations/<class>.csv; image ``i`` has class ``i % 3``."""
    classes = list(SINGLE_OBJECT_CLASSES)
    per_class = dict.fromkeys(classes, 0)

    def samples() -> Iterator[Any]:
        for i in range(num_images):
            label = i % len(classes)
            per_class[classes[label]] += 1
            rng = scene_rng(seed, "single_object", i)
            height, width = _size(rng, params["height"]), _size(rng, params["width"])
            scene = single_object_scene(rng, label, height=height, width=width)
            name = f"{classes[label]}/image_{per_class[classes[label]]:04d}.jpg"
            yield detection_record(scene, i + 1, name), scene.image

    csvboxes.write(out, samples(), classes)
    return {"images": num_images, **per_class}


def build_racoon(out: Path, num_images: int, seed: int, params: dict[str, Any]) -> dict[str, int]:
    """Pascal VOC: JPEGImages/raccoon-1.jpg, Annotations/raccoon-1.xml, ImageSets/Main/<split>.txt."""
    n_val = _val_count(num_images, params["val_fraction"])
    counts = {"images": num_images, "instances": 0, "train": num_images - n_val, "val": n_val}
    for split, indices in (
        ("train", range(num_images - n_val)),
        ("val", range(num_images - n_val, num_images)),
    ):

        def samples(indices: range = indices) -> Iterator[Any]:
            for i in indices:
                rng = scene_rng(seed, "racoon", i)
                width = _size(rng, params["width"])
                scene = raccoon_scene(rng, height=_size(rng, params["height"]), width=width)
                counts["instances"] += len(scene.labels)
                yield detection_record(scene, i + 1, f"raccoon-{i + 1}.jpg"), scene.image

        voc.write(out, samples(), ["raccoon"], split=split)
    return counts


def build_salt(out: Path, num_images: int, seed: int, params: dict[str, Any]) -> dict[str, int]:
    """TGS: train/{images,masks}/<id>.png, test/images/<id>.png, depths.csv, train.csv."""
    n_test = round(num_images * params["test_fraction"])
    depths: dict[str, float] = {}
    counts = {"images": num_images, "test": n_test, "empty_masks": 0}

    def samples(indices: range, with_mask: bool) -> Iterator[Any]:
        for i in indices:
            rng = scene_rng(seed, "salt", i)
            stem = rng.bytes(5).hex()  # Kaggle ids are 10 hex digits
            if stem in depths:
                stem = f"{stem[:6]}{i % 65536:04x}"
            image, mask, depth = salt_section(
                rng, size=params["size"], empty_fraction=params["empty_fraction"]
            )
            depths[stem] = depth
            counts["empty_masks"] += with_mask and not mask.any()
            yield stem, image, mask if with_mask else None

    tgs.write(out, samples(range(num_images), True), split="train")
    tgs.write(out, samples(range(num_images, num_images + n_test), False), split="test")
    tgs.write(out, [], split="train", depths=depths, write_csv=False)
    return counts


def build_street(out: Path, num_images: int, seed: int, params: dict[str, Any]) -> dict[str, int]:
    """Cityscapes pairs: cityscapes_data/train/1.jpg ..., cityscapes_data/val/1.jpg ..."""
    to_theirs = np.array([cityscapes.CLASSES.index(name) for name in STREET_CLASSES])
    n_val = _val_count(num_images, params["val_fraction"])
    starts = {"train": 0, "val": num_images - n_val}
    for split, indices in (
        ("train", range(num_images - n_val)),
        ("val", range(num_images - n_val, num_images)),
    ):

        def samples(indices: range = indices, start: int = starts[split]) -> Iterator[Any]:
            for i in indices:
                image, labels = street_scene(scene_rng(seed, "street", i), size=params["size"])
                yield str(i - start + 1), image, to_theirs[labels]

        cityscapes.write(out, samples(), split=split)
    return {"images": num_images, "train": num_images - n_val, "val": n_val}


def build_road(out: Path, num_images: int, seed: int, params: dict[str, Any]) -> dict[str, int]:
    """KITTI road: categories um / umm / uu in turn, numbered from 000000 in each; testing has no gt."""
    to_theirs = np.array([kitti_road.CLASSES.index(name) for name in ROAD_CLASSES])
    n_test = round(num_images * params["test_fraction"])
    counts = {"images": num_images, "test": n_test}

    def samples(indices: range, with_labels: bool) -> Iterator[Any]:
        numbers = dict.fromkeys(ROAD_CATEGORIES, 0)
        for position, i in enumerate(indices):
            category = list(ROAD_CATEGORIES)[position % 3]
            rng = scene_rng(seed, "road", i)
            image, labels = road_scene(
                rng,
                height=params["height"],
                width=params["width"],
                marked=ROAD_CATEGORIES[category],
            )
            yield (
                f"{category}_{numbers[category]:06d}",
                image,
                to_theirs[labels] if with_labels else None,
            )
            numbers[category] += 1

    kitti_road.write(out, samples(range(num_images), True), split="training")
    kitti_road.write(out, samples(range(num_images, num_images + n_test), False), split="testing")
    return counts


def build_video(out: Path, num_frames: int, seed: int, params: dict[str, Any]) -> dict[str, int]:
    """video.mp4 (mp4v; video.avi with MJPG where mp4v cannot be written) + annotations.json."""
    height, width, fps = params["height"], params["width"], params["fps"]
    writer, name = None, ""
    for fourcc, candidate in (("mp4v", "video.mp4"), ("MJPG", "video.avi")):
        writer = cv2.VideoWriter(
            str(out / candidate), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height)
        )
        if writer.isOpened():
            name = candidate
            break
        writer.release()
        (out / candidate).unlink(missing_ok=True)
    if not name or writer is None:
        raise RuntimeError("OpenCV can write neither mp4v (.mp4) nor MJPG (.avi) video here")
    frames: dict[str, dict[str, list[Any]]] = {}
    rng = scene_rng(seed, "video", 0)
    stream = moving_objects(
        rng, num_frames=num_frames, height=height, width=width, num_objects=params["num_objects"]
    )
    for index, (frame, boxes, labels, track_ids) in enumerate(stream):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        frames[str(index)] = {
            "boxes": boxes.tolist(),
            "labels": labels.tolist(),
            "track_ids": track_ids.tolist(),
        }
    writer.release()
    annotations = {
        "video": name,
        "fps": fps,
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "classes": list(SHAPE_CLASSES),
        "box_format": "xyxy, absolute pixels, visible part of each object",
        "frames": frames,
    }
    (out / "annotations.json").write_text(json.dumps(annotations))
    return {"frames": num_frames, "boxes": sum(len(f["labels"]) for f in frames.values())}
