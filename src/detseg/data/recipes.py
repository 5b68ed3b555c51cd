"""Built-in datasets: synthetic stand-ins written in the exact file layout of the real ones.

Each entry of :data:`RECIPES` draws scenes with :mod:`detseg.data.synthetic` (and friends) and writes
them with the writer of the real dataset's format (:mod:`detseg.data.formats`), so the lesson reads
them with the same reader it would use on the real download::

    root = recipes.ensure("shapes")                  # data/shapes-0/, generated once, then cached
    dataset = recipes.load("shapes", split="val")    # DetectionDataset from the COCO reader

==============  ====================  ===========================================================
recipe          stands in for         layout written (under ``data/<recipe>-<seed>/``)
==============  ====================  ===========================================================
shapes          COCO / Roboflow       annotations/instances_{train,val}.json, train/, val/, and a
                                      YOLO (Roboflow v5/v7) export in yolo/ (data.yaml)
pedestrians     Penn-Fudan            PennFudanPed/{PNGImages,PedMasks,Annotation}/
single_object   Caltech-101 subset    images/<class>/image_0001.jpg, annotations/<class>.csv
                (PyImageSearch CSV)
racoon          raccoon (VOC XML)     JPEGImages/raccoon-1.jpg, Annotations/raccoon-1.xml,
                                      ImageSets/Main/{train,val}.txt
salt            TGS Salt (Kaggle)     train/{images,masks}/<id>.png (101 x 101), test/images/,
                                      depths.csv, train.csv
street          Cityscapes pairs      cityscapes_data/{train,val}/1.jpg (256 x 512: photo | label)
road            KITTI road            data_road/{training,testing}/image_2/um_000000.png and
                                      training/gt_image_2/um_road_000000.png; 160 x 480 instead of
                                      375 x 1242 so that CPU training stays feasible
video           (a street camera)     video.mp4 (mp4v; MJPG video.avi if mp4v is unavailable) and
                                      annotations.json (frame -> boxes xyxy, labels, track ids)
tabletop        webcam set exported   data.yaml, {train,valid,test}/{images,labels}/ (Roboflow
                by Roboflow (YOLOv7)  "YOLO v7 PyTorch" export; 320 x 240 frames)
==============  ====================  ===========================================================

Image ``i`` depends only on ``(seed, recipe, i)``; the same call writes the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detseg import settings
from detseg.data import recipe_writers as writers
from detseg.data.formats import cityscapes, coco, csvboxes, kitti_road, pennfudan, tgs, voc
from detseg.data.synthetic import GENERATOR_VERSION
from detseg.data.synthetic_tabletop import build_tabletop, read_tabletop
from detseg.errors import UserError

MANIFEST = "manifest.json"
SMOKE_IMAGES = 16


@dataclass(frozen=True)
class Recipe:
    """A built-in dataset.

    Attributes:
        name: key in :data:`RECIPES` and folder prefix.
        kind: ``"detection"``, ``"segmentation"`` or ``"video"``.
        stands_in_for: the real dataset whose layout is written.
        num_images: default size (images, or frames for ``video``); :data:`SMOKE_IMAGES` in smoke mode.
        params: drawing parameters (image size, split fractions ...); any change regenerates.
        build: ``build(out_dir, num_images, seed, params) -> counts`` writes the files.
        read: ``read(root, split)`` returns the dataset through the real format's reader.
        splits: the splits ``read`` accepts.
    """

    name: str
    kind: str
    stands_in_for: str
    num_images: int
    params: dict[str, Any]
    build: Callable[[Path, int, int, dict[str, Any]], dict[str, int]] = field(repr=False)
    read: Callable[[Path, str], Any] = field(repr=False)
    splits: tuple[str, ...] = ("train",)


@dataclass
class VideoDataset:
    """The ``video`` recipe read back: a video file and its per-frame ground truth.

    Attributes:
        path: the video file. fps, width, height: as written.
        classes: class names (index = label).
        frames: per frame index ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [...], "track_ids": [...]}``.
    """

    path: Path
    fps: float
    width: int
    height: int
    classes: list[str]
    frames: list[dict[str, list[Any]]]


def _read_video(root: Path, split: str) -> VideoDataset:
    data = json.loads((root / "annotations.json").read_text())
    frames = [data["frames"][str(i)] for i in range(data["num_frames"])]
    return VideoDataset(
        root / data["video"], data["fps"], data["width"], data["height"], data["classes"], frames
    )


RECIPES: dict[str, Recipe] = {
    "shapes": Recipe(
        "shapes", "detection", "COCO instances JSON + Roboflow YOLO export", 1000,
        {"size": 256, "val_fraction": 0.2, "yolo": True},
        writers.build_shapes,
        lambda root, split: coco.read(
            root / "annotations" / f"instances_{split}.json", image_root=root / split
        ),
        ("train", "val"),
    ),
    "pedestrians": Recipe(
        "pedestrians", "detection", "Penn-Fudan pedestrians", 170,
        {"height": 256, "width": (256, 384), "fudan_fraction": 74 / 170},
        writers.build_pedestrians,
        lambda root, split: pennfudan.read(root / "PennFudanPed"),
    ),
    "single_object": Recipe(
        "single_object", "detection", "Caltech-101 airplanes / faces / motorbikes (PyImageSearch CSV)", 600,
        {"height": (192, 256), "width": (256, 320)},
        writers.build_single_object,
        lambda root, split: csvboxes.read(root),
    ),
    "racoon": Recipe(
        "racoon", "detection", "raccoon dataset (Pascal VOC XML)", 200,
        {"height": 256, "width": (256, 384), "val_fraction": 0.2},
        writers.build_racoon,
        lambda root, split: voc.read(root, split=split, classes=["raccoon"]),
        ("train", "val"),
    ),
    "salt": Recipe(
        "salt", "segmentation", "TGS Salt Identification (Kaggle)", 4000,
        {"size": 101, "empty_fraction": 0.4, "test_fraction": 0.25},
        writers.build_salt,
        lambda root, split: tgs.read(root, split),
        ("train", "test"),
    ),
    "street": Recipe(
        "street", "segmentation", "Cityscapes image pairs (Kaggle)", 1000,
        {"size": 256, "val_fraction": 0.15},
        writers.build_street,
        lambda root, split: cityscapes.read(root, split),
        ("train", "val"),
    ),
    "road": Recipe(
        "road", "segmentation", "KITTI road", 289,
        {"height": 160, "width": 480, "test_fraction": 0.25},
        writers.build_road,
        lambda root, split: kitti_road.read(root, {"train": "training", "test": "testing"}[split]),
        ("train", "test"),
    ),
    "video": Recipe(
        "video", "video", "a fixed camera watching moving objects", 300,
        {"height": 240, "width": 320, "fps": 30, "num_objects": 4},
        writers.build_video,
        _read_video,
    ),
    "tabletop": Recipe(
        "tabletop", "detection", "webcam table-top set (ball, cup, lotion), Roboflow YOLOv7", 600,
        {"height": 240, "width": 320},
        build_tabletop,
        read_tabletop,
        ("train", "val", "test"),
    ),
}  # fmt: skip


def get(recipe: str | Recipe) -> Recipe:
    """The :class:`Recipe` named ``recipe`` (a Recipe passes through). Raises UserError if unknown."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise UserError(f"unknown built-in dataset {recipe!r}", fix=f"use one of {sorted(RECIPES)}")
    return RECIPES[recipe]


def default_num_images(recipe: str | Recipe) -> int:
    """The recipe's default size: :data:`SMOKE_IMAGES` in smoke mode (``DETSEG_SMOKE=1``)."""
    return SMOKE_IMAGES if settings.smoke_mode() else get(recipe).num_images


def _manifest(recipe: Recipe, num_images: int, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    # JSON round trip so tuples and lists compare equal with what is read back
    return json.loads(
        json.dumps(
            {
                "recipe": recipe.name,
                "stands_in_for": recipe.stands_in_for,
                "seed": seed,
                "num_images": num_images,
                "params": params,
                "generator_version": GENERATOR_VERSION,
            }
        )
    )


def _resolve(
    recipe: str | Recipe, num_images: int | None, seed: int, params: dict[str, Any] | None
) -> tuple[Recipe, int, dict[str, Any]]:
    spec = get(recipe)
    num_images = default_num_images(spec) if num_images is None else int(num_images)
    if num_images < 1:
        raise UserError(f"num_images must be >= 1, got {num_images}", fix="pass a positive count")
    if int(seed) < 0:
        raise UserError(f"seed must be >= 0, got {seed}", fix="pass a non-negative seed")
    unknown = set(params or {}) - set(spec.params)
    if unknown:
        raise UserError(
            f"unknown parameters {sorted(unknown)} for recipe {spec.name!r}",
            fix=f"use some of {sorted(spec.params)}",
        )
    return spec, num_images, {**spec.params, **(params or {})}


def make(
    recipe: str | Recipe,
    out_dir: str | Path,
    *,
    num_images: int | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> Path:
    """Generate a built-in dataset into ``out_dir`` (created; existing files are overwritten).

    Args:
        recipe: a name in :data:`RECIPES`.
        num_images: images (frames for ``video``); default :func:`default_num_images`.
        seed: >= 0; image ``i`` depends only on ``(seed, recipe, i)``.
        params: overrides of ``Recipe.params``.
    Returns:
        ``out_dir``, holding the dataset and ``manifest.json`` (written last).
    """
    spec, num_images, merged = _resolve(recipe, num_images, seed, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = spec.build(out_dir, num_images, int(seed), merged)
    manifest = {**_manifest(spec, num_images, int(seed), merged), "counts": counts}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none (or it is unreadable)."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_current(folder: Path, expected: dict[str, Any]) -> bool:
    found = read_manifest(folder)
    return found is not None and {k: found.get(k) for k in expected} == expected


def dataset_folder_name(recipe: str | Recipe, *, seed: int, num_images: int) -> str:
    """``<recipe>-<seed>`` at the recipe's full size, else ``<recipe>-<seed>-n<num_images>``."""
    spec = get(recipe)
    name = f"{spec.name}-{int(seed)}"
    return name if num_images == spec.num_images else f"{name}-n{int(num_images)}"


def ensure(
    recipe: str | Recipe,
    *,
    seed: int = 0,
    num_images: int | None = None,
    root: str | Path | None = None,
    params: dict[str, Any] | None = None,
) -> Path:
    """The folder of a built-in dataset, generated on first use and cached.

    The folder is ``(root or settings.data_root()) / dataset_folder_name(...)``: ``<recipe>-<seed>``
    at the recipe's full size, ``<recipe>-<seed>-n<num_images>`` for any other size (smoke mode
    included), so that switching sizes never regenerates another size's data. It is reused when its
    ``manifest.json`` records the same recipe, seed, size, parameters and generator version, and
    regenerated otherwise. Generation writes into a temporary sibling folder renamed into place at
    the end, so a half-written folder is never taken for a complete one.

    Raises:
        UserError: the folder exists but holds no manifest (not a built-in dataset; left alone).
    """
    spec, num_images, merged = _resolve(recipe, num_images, seed, params)
    base = settings.data_root() if root is None else Path(root)
    folder = base / dataset_folder_name(spec, seed=seed, num_images=num_images)
    expected = _manifest(spec, num_images, int(seed), merged)
    if _is_current(folder, expected):
        return folder
    if folder.exists() and read_manifest(folder) is None:
        raise UserError(
            "folder exists but has no manifest.json, so it is not a built-in dataset",
            path=folder,
            fix="move or delete it, or set DETSEG_DATA to another folder",
        )
    base.mkdir(parents=True, exist_ok=True)
    temp = base / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        make(spec, temp, num_images=num_images, seed=seed, params=merged)
        stale = base / f".{folder.name}.old-{os.getpid()}"
        if folder.exists():
            folder.rename(stale)
        try:
            temp.rename(folder)
        except OSError:  # another process finished first: keep its copy if it is current
            if not _is_current(folder, expected):
                raise
        shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder


def load(
    recipe: str | Recipe,
    *,
    seed: int = 0,
    num_images: int | None = None,
    split: str = "train",
    root: str | Path | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """:func:`ensure` the dataset, then read ``split`` with the real format's reader.

    Returns:
        A :class:`~detseg.data.types.DetectionDataset`, a
        :class:`~detseg.data.types.SegmentationDataset` or, for ``video``, a :class:`VideoDataset`.
        Datasets without splits in their real layout (pedestrians, single_object, video) have only
        ``"train"`` (every image); the lesson splits them itself.
    """
    spec = get(recipe)
    if split not in spec.splits:
        raise UserError(
            f"recipe {spec.name!r} has no split {split!r}", fix=f"use one of {list(spec.splits)}"
        )
    folder = ensure(spec, seed=seed, num_images=num_images, root=root, params=params)
    return spec.read(folder, split)
