"""Built-in datasets: real layouts, byte-determinism, the manifest cache, reading back, the baseline."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detseg.data import recipes
from detseg.data.baseline import coco_ap50, naive_baseline
from detseg.data.formats import coco, yolo
from detseg.data.imageio import read_image
from detseg.data.synthetic import SHAPE_CLASSES, scene_rng, shapes_scene
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError

# pycocotools 2.0 + numpy 2 warn inside mask.decode; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# files that must exist for num_images=6 (the real datasets' names)
LAYOUT = {
    "shapes": [
        "annotations/instances_train.json",
        "annotations/instances_val.json",
        "train/000000000001.jpg",
        "val/000000000006.jpg",
        "yolo/data.yaml",
        "yolo/train/images/000000000001.jpg",
        "yolo/train/labels/000000000001.txt",
        "yolo/valid/labels/000000000006.txt",
    ],
    "pedestrians": [
        "PennFudanPed/PNGImages/FudanPed00001.png",
        "PennFudanPed/PedMasks/FudanPed00001_mask.png",
        "PennFudanPed/Annotation/FudanPed00001.txt",
        "PennFudanPed/PNGImages/PennPed00001.png",
    ],
    "single_object": [
        "images/airplane/image_0001.jpg",
        "images/face/image_0002.jpg",
        "images/motorcycle/image_0001.jpg",
        "annotations/airplane.csv",
        "annotations/face.csv",
        "annotations/motorcycle.csv",
    ],
    "racoon": [
        "JPEGImages/raccoon-1.jpg",
        "Annotations/raccoon-1.xml",
        "Annotations/raccoon-6.xml",
        "ImageSets/Main/train.txt",
        "ImageSets/Main/val.txt",
    ],
    "salt": ["depths.csv", "train.csv"],
    "street": [
        "cityscapes_data/train/1.jpg",
        "cityscapes_data/train/5.jpg",
        "cityscapes_data/val/1.jpg",
    ],
    "road": [
        "data_road/training/image_2/um_000000.png",
        "data_road/training/gt_image_2/um_road_000000.png",
        "data_road/training/image_2/umm_000001.png",
        "data_road/training/gt_image_2/uu_road_000001.png",
        "data_road/testing/image_2/um_000000.png",
    ],
    "video": ["video.mp4", "annotations.json"],
    "tabletop": ["data.yaml", "README.dataset.txt"],  # names: tests/test_recipe_tabletop.py
}


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_every_recipe_has_a_layout_check() -> None:
    assert set(LAYOUT) == set(recipes.RECIPES)


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_layout_names_and_byte_determinism(name: str, tmp_path: Path) -> None:
    first = recipes.make(name, tmp_path / "a", num_images=6, seed=1)
    for relative in LAYOUT[name]:
        assert (first / relative).is_file(), relative
    again = recipes.make(name, tmp_path / "b", num_images=6, seed=1)
    other = recipes.make(name, tmp_path / "c", num_images=6, seed=2)
    files_a, files_b, files_c = _files(first), _files(again), _files(other)
    assert files_a == files_b, "same seed must write the same bytes"
    images = [k for k in files_a if k.endswith((".jpg", ".png", ".mp4"))]
    assert images and any(files_a[k] != files_c.get(k) for k in images)
    manifest = json.loads(files_a["manifest.json"])
    assert manifest["recipe"] == name and manifest["num_images"] == 6 and manifest["seed"] == 1


def test_salt_layout_and_empty_fraction(tmp_path: Path) -> None:
    root = recipes.make("salt", tmp_path / "salt", num_images=120, seed=0)
    ids = [p.stem for p in (root / "train" / "images").glob("*.png")]
    assert len(ids) == 120 and all(len(i) == 10 and int(i, 16) >= 0 for i in ids)
    assert sorted(p.stem for p in (root / "train" / "masks").glob("*.png")) == sorted(ids)
    mask = cv2.imread(str(root / "train" / "masks" / f"{ids[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (101, 101) and set(np.unique(mask)) <= {0, 255}
    depth_rows = (root / "depths.csv").read_text().splitlines()
    assert depth_rows[0] == "id,z" and len(depth_rows) == 1 + 120 + 30
    counts = recipes.read_manifest(root)["counts"]
    assert 0.3 < counts["empty_masks"] / 120 < 0.5


def test_read_back_equals_generated_scenes(isolated_dirs: tuple[Path, Path]) -> None:
    dataset = recipes.load("shapes", num_images=8, split="train")
    assert dataset.format == "coco" and dataset.classes == [
        "circle",
        "triangle",
        "rectangle",
        "star",
        "ring",
    ]
    assert len(dataset) == 6
    for index, record in enumerate(dataset.records):
        scene = shapes_scene(scene_rng(0, "shapes", index))
        np.testing.assert_array_equal(record.boxes, scene.boxes)
        np.testing.assert_array_equal(record.labels, scene.labels)
        masks = mask_utils.decode(record.segmentations).transpose(2, 0, 1)  # [N, H, W]
        np.testing.assert_array_equal(masks.astype(bool), scene.masks)
        xywh = mask_utils.toBbox(record.segmentations)
        np.testing.assert_array_equal(record.boxes, np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]])
        decoded = read_image(dataset.image_path(record)).astype(int)
        assert np.abs(decoded - scene.image).mean() < 8  # JPEG quality 95 of noisy scenes
    exported = yolo.read(recipes.ensure("shapes", num_images=8) / "yolo" / "data.yaml", "train")
    assert exported.classes == dataset.classes and len(exported) == len(dataset)
    for theirs, ours in zip(sorted(exported.records, key=lambda r: r.file_name), dataset.records):
        assert theirs.file_name == ours.file_name
        np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=1e-3)  # 6 decimals, normalised
        np.testing.assert_array_equal(theirs.labels, ours.labels)


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_each_recipe_reads_back_with_its_format_reader(
    name: str, isolated_dirs: tuple[Path, Path]
) -> None:
    spec = recipes.RECIPES[name]
    counts = recipes.read_manifest(recipes.ensure(name, num_images=9))["counts"]
    total = 0
    for split in spec.splits:
        dataset = recipes.load(name, num_images=9, split=split)
        if spec.kind == "video":
            assert len(dataset.frames) == 9 and dataset.classes
            capture = cv2.VideoCapture(str(dataset.path))
            decoded = 0
            while capture.read()[0]:
                decoded += 1
            assert decoded == 9
            continue
        total += len(dataset)
        if spec.kind == "detection":
            for record in dataset.records:
                assert len(record.labels) >= 1
                assert (record.boxes[:, 2:] > record.boxes[:, :2]).all()
                assert (record.boxes[:, 2] <= record.width).all() and (
                    record.boxes[:, 3] <= record.height
                ).all()
        else:
            image, mask = dataset.load(dataset.records[0])
            assert image.shape[:2] == mask.shape and mask.max() < 256
    if spec.kind != "video":
        expected = counts["images"] + counts.get("test", 0)
        assert total == expected


def test_pennfudan_boxes_match_the_instance_masks(isolated_dirs: tuple[Path, Path]) -> None:
    dataset = recipes.load("pedestrians", num_images=4)
    for record in dataset.records:
        masks = mask_utils.decode(record.segmentations).transpose(2, 0, 1)
        for box, mask in zip(record.boxes, masks):
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            # the PennFudan reader uses torchvision's masks_to_boxes: max corner = last pixel index
            np.testing.assert_array_equal(box, [cols[0], rows[0], cols[-1], rows[-1]])


def test_manifest_cache_and_regeneration(
    isolated_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_root, _ = isolated_dirs
    calls = []
    original = recipes.RECIPES["salt"].build

    def counting_build(*args: object) -> dict[str, int]:
        calls.append(args[1:])
        return original(*args)

    spec = recipes.RECIPES["salt"]
    monkeypatch.setitem(recipes.RECIPES, "salt", dataclasses.replace(spec, build=counting_build))
    folder = recipes.ensure("salt", num_images=5)
    assert folder == data_root / "salt-0-n5" and len(calls) == 1
    assert recipes.ensure("salt", num_images=5) == folder and len(calls) == 1  # cached
    recipes.ensure("salt", num_images=5, params={"empty_fraction": 0.0})  # params changed
    assert len(calls) == 2 and recipes.read_manifest(folder)["params"]["empty_fraction"] == 0.0
    assert recipes.read_manifest(folder)["counts"]["empty_masks"] == 0
    other = recipes.ensure("salt", num_images=7, params={"empty_fraction": 0.0})  # other size
    assert other == data_root / "salt-0-n7" and len(calls) == 3
    assert len(list((other / "train" / "images").glob("*.png"))) == 7
    # switching back to the first size finds it still cached: sizes never evict each other
    assert recipes.ensure("salt", num_images=5, params={"empty_fraction": 0.0}) == folder
    assert len(calls) == 3
    recipes.ensure("salt", num_images=7, seed=3, params={"empty_fraction": 0.0})
    assert (data_root / "salt-3-n7" / "manifest.json").is_file() and len(calls) == 4
    assert sorted(p.name for p in data_root.iterdir()) == ["salt-0-n5", "salt-0-n7", "salt-3-n7"], (
        "no temp folders left"
    )


def test_full_size_folder_is_recipe_dash_seed() -> None:
    full = recipes.RECIPES["salt"].num_images
    assert recipes.dataset_folder_name("salt", seed=0, num_images=full) == "salt-0"
    assert recipes.dataset_folder_name("salt", seed=2, num_images=16) == "salt-2-n16"


def test_half_written_folder_is_never_taken_as_complete(
    isolated_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_root, _ = isolated_dirs

    def failing_build(out: Path, *args: object) -> dict[str, int]:
        (out / "train").mkdir()
        raise RuntimeError("disk full")

    spec = recipes.RECIPES["salt"]
    monkeypatch.setitem(recipes.RECIPES, "salt", dataclasses.replace(spec, build=failing_build))
    with pytest.raises(RuntimeError, match="disk full"):
        recipes.ensure("salt", num_images=3)
    assert not data_root.exists() or list(data_root.iterdir()) == []


def test_foreign_folder_is_left_alone(isolated_dirs: tuple[Path, Path]) -> None:
    data_root, _ = isolated_dirs
    (data_root / "salt-0-n3").mkdir(parents=True)
    (data_root / "salt-0-n3" / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="no manifest"):
        recipes.ensure("salt", num_images=3)
    assert (data_root / "salt-0-n3" / "mine.txt").read_text() == "user data"


def test_smoke_sizes(isolated_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETSEG_SMOKE", "1")
    assert all(recipes.default_num_images(name) == recipes.SMOKE_IMAGES for name in recipes.RECIPES)
    folder = recipes.ensure("single_object")
    assert recipes.read_manifest(folder)["num_images"] == recipes.SMOKE_IMAGES == 16
    monkeypatch.setenv("DETSEG_SMOKE", "0")
    assert (
        recipes.default_num_images("shapes") == 1000 and recipes.default_num_images("road") == 289
    )


def test_bad_requests_raise_user_errors(isolated_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(UserError, match="unknown built-in dataset"):
        recipes.ensure("shapez")
    with pytest.raises(UserError, match="seed"):
        recipes.ensure("shapes", seed=-1)
    with pytest.raises(UserError, match="num_images"):
        recipes.ensure("shapes", num_images=0)
    with pytest.raises(UserError, match="unknown parameters"):
        recipes.ensure("shapes", params={"colour": "red"})
    with pytest.raises(UserError, match="no split"):
        recipes.load("pedestrians", split="val")


def _coco_eval_ap50(truth: COCO, detections: list[dict]) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


def _baseline_detections(images: dict[int, np.ndarray]) -> list[dict]:
    detections = []
    for image_id, image in images.items():
        for box, score, label in zip(*(a.tolist() for a in naive_baseline(image))):
            xywh = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            detections.append(
                {"image_id": image_id, "category_id": label + 1, "bbox": xywh, "score": score}
            )
    return detections


def test_naive_baseline_scores_low_on_shapes(isolated_dirs: tuple[Path, Path]) -> None:
    root = recipes.ensure("shapes", num_images=50, params={"yolo": False})
    json_path = root / "annotations" / "instances_train.json"
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(json_path))
    images = {i: read_image(root / "train" / truth.imgs[i]["file_name"]) for i in truth.getImgIds()}
    ap50 = _coco_eval_ap50(truth, _baseline_detections(images))
    assert ap50 < 0.3
    assert coco_ap50(json_path, root / "train") == pytest.approx(ap50)


def test_naive_baseline_works_on_easy_control_scenes() -> None:
    """Flat grey, no clutter, no jitter, few objects: the same baseline scores well, so the low score
    above comes from the scenes, not from a broken baseline."""
    scenes = {
        i + 1: shapes_scene(
            scene_rng(0, "control", i),
            backgrounds=("flat",),
            clutter=False,
            jitter=0.0,
            num_objects=(1, 3),
            scale=(0.1, 0.3),
        )
        for i in range(30)
    }
    records = [
        DetectionRecord(i, f"{i}.png", 256, 256, s.boxes, s.labels) for i, s in scenes.items()
    ]
    truth = COCO()
    truth.dataset = coco.to_dict(DetectionDataset(Path("."), list(SHAPE_CLASSES), records))
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
    ap50 = _coco_eval_ap50(truth, _baseline_detections({i: s.image for i, s in scenes.items()}))
    assert ap50 > 0.5
