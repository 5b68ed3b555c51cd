"""Lessons 4 and 5: torchvision segmentation builders, the offline pretrained path, and the
COCO -> class-map conversion (merge rule, hand RLE decoder, pycocotools vs detseg's reader).

The notebooks themselves run in tests/test_notebooks.py; here the pieces they rely on are checked
on small inputs. Functions defined inside a lesson are taken from its source with ``ast`` (only the
named ``def`` statements are compiled, the cells are not run).
"""

from __future__ import annotations

import ast
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from segmentation_models import MODELS, replace_last_layers
from torchvision.models import segmentation as tv_seg

from detseg import pretrained
from detseg.data import recipes
from detseg.data.formats import coco as coco_format
from detseg.data.samples import decode_segmentations
from detseg.errors import UserError

FOLDER = Path(__file__).resolve().parents[1]
TORCHVISION_MODELS = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


def lesson_functions(source: Path, *names: str) -> dict:
    """The named top-level functions of a notebook source, compiled without running its cells."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert sorted(n.name for n in nodes) == sorted(names), f"missing in {source.name}"
    namespace: dict = {"np": np}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(source), "exec"), namespace)
    return {name: namespace[name] for name in names}


LESSON5 = lesson_functions(
    FOLDER / "5_coco_to_semantic.py",
    "merge_instances",
    "decode_rle_counts",
    "rle_to_mask_by_hand",
    "mask_to_uncompressed_rle",
)
merge_instances = LESSON5["merge_instances"]


# ------------------------------------------------------------------------------------ lesson 5


def test_merge_smaller_instance_wins_and_crowd_only_pixels_are_ignored():
    big = np.zeros((4, 5), bool)
    big[0:3, 0:3] = True
    small = np.zeros((4, 5), bool)
    small[2:4, 1:3] = True  # 2 of its 4 pixels lie on the big one
    crowd = np.zeros((4, 5), bool)
    crowd[:, 2:] = True
    expected = np.array(
        [
            [1, 1, 1, 255, 255],
            [1, 1, 1, 255, 255],
            [1, 2, 2, 255, 255],
            [0, 2, 2, 255, 255],
        ]
    )
    # the order in the file must not matter: small first or big first, same map
    for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        masks = np.stack([small, big, crowd])[order]
        labels = np.array([2, 1, 3])[order]
        crowd_flags = np.array([False, False, True])[order]
        np.testing.assert_array_equal(merge_instances(masks, labels, crowd_flags), expected)
    # equal areas: the later one wins; no instances: all background
    assert merge_instances(np.stack([big, big]), np.array([4, 5]))[0, 0] == 5
    empty = merge_instances(np.zeros((0, 3, 2), bool), np.zeros(0, np.int64))
    assert empty.shape == (3, 2) and empty.dtype == np.uint8 and not empty.any()


def test_hand_rle_codec_equals_pycocotools_on_random_masks():
    rng = np.random.default_rng(0)
    for height, width in [(1, 1), (7, 5), (32, 48)]:
        for density in (0.0, 0.2, 0.9, 1.0):
            mask = rng.random((height, width)) < density
            compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            compressed = {"size": compressed["size"], "counts": compressed["counts"].decode()}
            np.testing.assert_array_equal(LESSON5["rle_to_mask_by_hand"](compressed), mask)
            uncompressed = LESSON5["mask_to_uncompressed_rle"](mask)
            assert uncompressed["counts"] == LESSON5["decode_rle_counts"](compressed["counts"])
            decoded = mask_utils.decode(mask_utils.frPyObjects(uncompressed, height, width))
            np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_pycocotools_class_maps_equal_detseg_reader_on_shapes(tmp_path):
    root = recipes.ensure("shapes", num_images=6, root=tmp_path)
    json_path = root / "annotations" / "instances_train.json"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(json_path))
    class_of_category = {c: i + 1 for i, c in enumerate(sorted(coco.getCatIds()))}
    dataset = coco_format.read(json_path)
    assert len(dataset) == len(coco.imgs) > 0
    painted = 0
    for record in dataset.records:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=record.image_id, iscrowd=None))
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(bool)
        labels = np.array([class_of_category[a["category_id"]] for a in anns])
        iscrowd = np.array([a["iscrowd"] for a in anns], bool)
        from_pycocotools = merge_instances(masks, labels, iscrowd)
        ours_masks = decode_segmentations(record.segmentations, record.height, record.width)
        from_detseg = merge_instances(ours_masks, record.labels + 1, record.iscrowd)
        np.testing.assert_array_equal(from_pycocotools, from_detseg)
        painted += int((from_detseg > 0).sum())
    assert painted > 0


# ------------------------------------------------------------------------------------ lesson 4


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_builders_return_out_with_the_requested_classes(name):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=7, weights="none").eval()
    with torch.no_grad():
        output = model(torch.rand(1, 3, 64, 80))
    assert list(output) == ["out"]
    assert output["out"].shape == (1, 7, 64, 80)


@pytest.mark.parametrize(
    ("name", "heads"),
    [
        ("fcn_resnet50", ["out", "aux"]),
        ("deeplabv3_mobilenet_v3_large", ["out", "aux"]),
        ("lraspp_mobilenet_v3_large", ["out"]),  # LR-ASPP has no auxiliary head
    ],
)
def test_replace_last_layers_turns_21_voc_classes_into_7(name, heads):
    aux = name != "lraspp_mobilenet_v3_large"
    model = getattr(tv_seg, name)(weights=None, weights_backbone=None, num_classes=21, aux_loss=aux)
    replace_last_layers(model, 7)
    finals = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        output = model.eval()(torch.rand(1, 3, 64, 64))
    assert list(output) == heads
    assert all(output[key].shape == (1, 7, 64, 64) for key in heads)
    # FCN / DeepLabV3: classifier[-1] and aux_classifier[-1]; LR-ASPP: low_ and high_classifier
    assert sum(conv.out_channels == 7 for conv in finals) == 2
    assert not any(conv.out_channels == 21 for conv in finals)


def test_pretrained_offline_is_one_line_naming_url_and_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    weights = tv_seg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
    with pytest.raises(UserError) as error:
        MODELS["lraspp_mobilenet_v3_large"](num_classes=7, weights="pretrained")
    message = str(error.value)
    expected_path = tmp_path / "hub" / "checkpoints" / "lraspp_mobilenet_v3_large-d234d4ea.pth"
    assert "\n" not in message
    assert weights.url in message and str(expected_path) in message
    assert pretrained.cache_path(weights) == expected_path


def test_pretrained_file_in_the_cache_is_loaded_and_heads_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = tv_seg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
    torch.manual_seed(1)
    source = tv_seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    path = pretrained.cache_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    model = MODELS["lraspp_mobilenet_v3_large"](num_classes=7, weights="pretrained")
    first_conv = "backbone.0.0.weight"
    torch.testing.assert_close(model.state_dict()[first_conv], source.state_dict()[first_conv])
    assert model.classifier.low_classifier.out_channels == 7
    assert model.classifier.high_classifier.out_channels == 7


def test_pretrained_with_aux_head_loads_strictly_and_a_wrong_file_is_refused(tmp_path, monkeypatch):
    # DeepLabV3 / FCN were published with an auxiliary head: every key must land, none be ignored
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = tv_seg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
    torch.manual_seed(2)
    source = tv_seg.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    )
    state = source.state_dict()
    path = pretrained.cache_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    model = MODELS["deeplabv3_mobilenet_v3_large"](num_classes=7, weights="pretrained")
    aux_conv = "aux_classifier.0.weight"
    torch.testing.assert_close(model.state_dict()[aux_conv], state[aux_conv])
    assert model.aux_classifier[-1].out_channels == 7

    del state["classifier.1.weight"]
    torch.save(state, path)
    with pytest.raises(UserError, match="do not fit this model.*classifier.1.weight") as error:
        MODELS["deeplabv3_mobilenet_v3_large"](num_classes=7, weights="pretrained")
    assert "\n" not in str(error.value)
