"""Tests of detseg.export: hand-checked helpers, then eager vs ONNX Runtime vs OpenCV DNN on real models."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("onnxruntime")

from detseg.errors import UserError  # noqa: E402
from detseg.export import (  # noqa: E402
    check_parity,
    export_onnx,
    flatten_outputs,
    match_detections,
    ort_run,
    ort_session,
    run_opencv_dnn,
    single_pixel_convs_as_1x1,
    time_inference,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


# ----------------------------------------------------------------------------------- helpers


def test_flatten_outputs_follows_exporter_order():
    nested = [{"boxes": 1, "scores": 2, "labels": 3}, ({"a": 4}, [5, 6])]
    assert flatten_outputs(nested) == [1, 2, 3, 4, 5, 6]
    assert flatten_outputs(7) == [7]


def test_match_detections_ignores_empty_boxes():
    # a zero-area box has IoU 0/0 with another zero-area box: never a match, never NaN
    empty = {"boxes": np.zeros((1, 4)), "scores": np.array([0.9]), "labels": np.array([1])}
    result = match_detections(empty, empty)
    assert result["matched"] == 0


def _dets(boxes, scores, labels, masks=None):
    out = {"boxes": np.array(boxes, float), "scores": np.array(scores), "labels": np.array(labels)}
    if masks is not None:
        out["masks"] = np.array(masks, float)
    return out


def test_match_detections_hand_cases():
    a = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [1, 2, 1])
    # b: same objects in another order, one shifted by 1 px, one with another label, plus an extra.
    b = _dets(
        [[21, 20, 41, 40], [0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]],
        [0.75, 0.9, 0.7, 0.5],
        [2, 1, 2, 1],
    )
    result = match_detections(a, b)
    assert result == {
        "count_a": 3, "count_b": 4, "matched": 2,
        "max_box_err": 1.0, "max_score_err": pytest.approx(0.05), "max_mask_err": None,
    }  # fmt: skip
    assert match_detections(a, a)["matched"] == 3 and match_detections(a, a)["max_box_err"] == 0
    assert match_detections(a, b, iou_threshold=0.95)["matched"] == 1
    empty = _dets(np.zeros((0, 4)), [], [])
    assert match_detections(a, empty)["matched"] == 0
    assert match_detections(empty, a)["max_box_err"] is None
    masks_a = np.zeros((1, 1, 4, 4))
    masks_b = np.zeros((1, 1, 4, 4))
    masks_b[0, 0, 1, 1] = 0.25
    with_masks = match_detections(
        _dets([[0, 0, 4, 4]], [0.5], [1], masks_a), _dets([[0, 0, 4, 4]], [0.5], [1], masks_b)
    )
    assert with_masks["max_mask_err"] == 0.25


def test_match_detections_is_greedy_by_score():
    # Two boxes of a both overlap b's only box; the higher-scoring one takes it even if IoU is lower.
    a = _dets([[0, 0, 10, 10], [0, 0, 10, 12]], [0.6, 0.9], [1, 1])
    b = _dets([[0, 0, 10, 10]], [0.6], [1])
    result = match_detections(a, b)
    assert result["matched"] == 1 and result["max_box_err"] == 2.0


def test_time_inference_calls_and_order():
    calls = []
    stats = time_inference(calls.append, "x", warmup=2, repeats=7)
    assert calls == ["x"] * 9
    assert stats["repeats"] == 7 and 0 <= stats["p10"] <= stats["median_ms"] <= stats["p90"]
    with pytest.raises(ValueError):
        time_inference(calls.append, "x", repeats=0)


def test_bad_files_raise_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        ort_session(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load"):
        ort_session(garbage)
    with pytest.raises(UserError, match="OpenCV DNN cannot read"):
        run_opencv_dnn(garbage, np.zeros((1, 3, 8, 8), np.float32))


def test_dynamo_without_onnxscript_says_what_to_install(tmp_path: Path):
    try:
        import onnxscript  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        pytest.skip("onnxscript is installed")
    with pytest.raises(UserError, match="onnxscript"):
        export_onnx(
            torch.nn.Linear(2, 2), torch.zeros(1, 2), tmp_path / "l.onnx",
            input_names=["x"], output_names=["y"], dynamo=True,
        )  # fmt: skip


# ----------------------------------------------------------------------------------- small CNN


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)


def _small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 5),
    )
    _randomise_batchnorm(model)
    return model.eval()


def test_small_cnn_onnxruntime_and_opencv_match_eager(tmp_path: Path):
    model = _small_cnn()
    path = export_onnx(
        model, torch.rand(2, 3, 32, 32), tmp_path / "cnn.onnx",
        input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    session = ort_session(path, threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        images = torch.rand(batch, 3, 32, 32, generator=generator)
        with torch.no_grad():
            eager = model(images)
        assert eager.abs().max() > 0.1, "a vacuous model would make parity meaningless"
        assert check_parity(model, session, images) < 1e-4
        (opencv,) = run_opencv_dnn(path, images.numpy())
        assert opencv.shape == (batch, 5)
        np.testing.assert_allclose(opencv, eager.numpy(), atol=1e-4, rtol=0)
    # A wrong input count is reported, not silently ignored.
    with pytest.raises(ValueError, match="takes 1 inputs"):
        ort_run(session, (images, images))


def test_opencv_depthwise_conv_on_one_pixel_reads_the_next_channels(tmp_path: Path):
    """Pins OpenCV DNN 4.14's bug: a depthwise 3 x 3 convolution with padding 1 on a 1 x 1 map
    gives channel c ``w11 x[c] + (w12 + w21) x[c + 1] + w22 x[c + 2]`` (the taps that should meet
    the padding's zeros read the next planes). ONNX Runtime is right. If this test fails, OpenCV
    changed: check whether :func:`single_pixel_convs_as_1x1` is still needed."""
    torch.manual_seed(0)
    channels = 8
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False).eval()
    x = torch.randn(1, channels, 1, 1)
    path = export_onnx(conv, x, tmp_path / "dw.onnx", input_names=["x"], output_names=["y"])
    w, v = conv.weight.detach().numpy()[:, 0], x.numpy().reshape(channels)  # [C, 3, 3], [C]
    right = w[:, 1, 1] * v  # the centre tap: what PyTorch computes
    with torch.no_grad():
        np.testing.assert_allclose(conv(x).numpy().reshape(-1), right, atol=1e-6)
    np.testing.assert_allclose(ort_run(ort_session(path), x)[0].reshape(-1), right, atol=1e-6)
    c = np.arange(channels - 2)  # the last two channels read past the tensor: undefined values
    opencv_bug = w[c, 1, 1] * v[c] + (w[c, 1, 2] + w[c, 2, 1]) * v[c + 1] + w[c, 2, 2] * v[c + 2]
    opencv = run_opencv_dnn(path, x.numpy())[0].reshape(-1)[c]
    np.testing.assert_allclose(opencv, opencv_bug, atol=1e-5)
    assert np.abs(opencv - right[c]).max() > 0.1  # wrong by the size of the outputs themselves


class _ShrinkingNet(torch.nn.Module):
    """8 x 8 -> 2 x 2 -> 1 x 1 maps, with convolutions that must and must not be replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(3, 6, 4, stride=4)  # 8 x 8 -> 2 x 2
        self.on_2x2 = torch.nn.Conv2d(6, 6, 3, padding=1, groups=3)  # sees 2 x 2: kept
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.depthwise = torch.nn.Conv2d(6, 6, 3, padding=1, groups=6)  # sees 1 x 1: replaced
        self.dilated = torch.nn.Conv2d(6, 4, 3, padding=2, dilation=2, bias=False)  # replaced
        self.over_padded = torch.nn.Conv2d(4, 4, 3, padding=2)  # sees 1 x 1, not "same": kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dilated(self.depthwise(self.pool(self.on_2x2(self.down(x)))))  # [B, 4, 1, 1]
        return torch.cat([y.flatten(1), self.over_padded(y).flatten(1)], 1)  # 4 + 4 x 3 x 3


def test_single_pixel_convs_as_1x1_replaces_exactly_the_same_padded_convs_on_1x1_maps():
    torch.manual_seed(0)
    net = _ShrinkingNet().train()
    x = torch.randn(2, 3, 8, 8)
    changed = copy.deepcopy(net)
    replaced = single_pixel_convs_as_1x1(changed, x[:1])
    assert replaced == ["depthwise", "dilated"]
    assert changed.training and all(m.training for m in changed.modules())  # modes restored
    for name in replaced:
        old, new = net.get_submodule(name), changed.get_submodule(name)
        assert new.kernel_size == (1, 1) and new.padding == (0, 0) and new.groups == old.groups
        torch.testing.assert_close(new.weight[:, :, 0, 0], old.weight[:, :, 1, 1])
    assert changed.dilated.bias is None and changed.depthwise.bias is not None
    for name in ("down", "on_2x2", "over_padded"):
        assert changed.get_submodule(name).kernel_size == net.get_submodule(name).kernel_size
    with torch.no_grad():
        torch.testing.assert_close(changed(x), net(x), rtol=0, atol=1e-6)  # the same function


def test_check_parity_detects_a_different_model(tmp_path: Path):
    model = _small_cnn()
    images = torch.rand(1, 3, 32, 32)
    path = export_onnx(model, images, tmp_path / "cnn.onnx", input_names=["x"], output_names=["y"])
    with torch.no_grad():
        model[-1].bias.add_(0.5)  # the eager model now differs from its export by exactly 0.5
    assert check_parity(model, ort_session(path), images) == pytest.approx(0.5, abs=1e-5)


# ----------------------------------------------------------------------------------- SSDlite


class SSDRawHead(torch.nn.Module):
    """Backbone + head of a torchvision SSD: normalised [N, 3, 320, 320] -> raw head outputs."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = list(self.backbone(images).values())
        outputs = self.head(features)
        return outputs["cls_logits"], outputs["bbox_regression"]  # [N, A, C], [N, A, 4]


@pytest.fixture(scope="module")
def ssdlite(tmp_path_factory):
    """A random-weight SSDlite whose activations are alive, and its two exports.

    torchvision's initialisation with running stats mean 0 / var 1 shrinks the features to ~1e-14
    and makes every class score exactly 1/3 (all ties): parity on that would prove nothing. One
    train-mode pass on random images sets the BatchNorm statistics so every layer is ~unit scale.
    """
    torch.manual_seed(0)
    detector = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3
    )
    with torch.no_grad():
        for module in detector.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one pass sets the batch statistics
        detector.train()
        raw = SSDRawHead(detector)
        raw(torch.rand(2, 3, 320, 320) * 2 - 1)  # what SSD's transform makes of [0, 1] images
    detector.eval()
    detector.score_thresh = 0.01
    folder = tmp_path_factory.mktemp("ssdlite")
    head_path = export_onnx(
        raw, torch.rand(1, 3, 320, 320), folder / "ssd_head.onnx",
        input_names=["images"], output_names=["cls_logits", "bbox_regression"],
        dynamic_axes={"images": {0: "batch"}},
    )  # fmt: skip
    raw_1x1 = copy.deepcopy(raw).eval()
    assert sorted(single_pixel_convs_as_1x1(raw_1x1, torch.rand(1, 3, 320, 320))) == [
        "head.classification_head.module_list.5.0.0",
        "head.regression_head.module_list.5.0.0",
    ]
    head_1x1_path = export_onnx(
        raw_1x1, torch.rand(1, 3, 320, 320), folder / "ssd_head_1x1.onnx",
        input_names=["images"], output_names=["cls_logits", "bbox_regression"],
    )  # fmt: skip
    image = torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(3))
    full_path = export_onnx(
        detector, ([image],), folder / "ssd_full.onnx",
        input_names=["image"], output_names=["boxes", "scores", "labels"],
        dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "scores": {0: "n"},
                      "labels": {0: "n"}},
    )  # fmt: skip
    return {"detector": detector, "raw": raw, "head": head_path, "head_1x1": head_1x1_path,
            "full": full_path, "image": image}  # fmt: skip


def test_ssdlite_raw_head_outputs_match(ssdlite):
    raw, session = ssdlite["raw"], ort_session(ssdlite["head"], threads=1)
    images = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        cls_logits, bbox_regression = raw(images)
    assert cls_logits.shape == (2, 3234, 3) and bbox_regression.shape == (2, 3234, 4)
    assert cls_logits.std() > 0.1 and bbox_regression.std() > 0.1, "activations must be alive"
    # float32 rounding grows with activation size: ~3e-5 absolute here for outputs up to ~3.
    assert check_parity(raw, session, images) < 1e-4
    # OpenCV DNN runs the raw head too, outputs in the file's order (OpenCV lists them reversed),
    # once the heads' convolutions on the 1 x 1 last map are 1 x 1 ones (OpenCV's depthwise bug).
    opencv = run_opencv_dnn(ssdlite["head_1x1"], images[:1].numpy())
    assert [o.shape for o in opencv] == [(1, 3234, 3), (1, 3234, 4)]
    np.testing.assert_allclose(opencv[0], cls_logits[:1].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(opencv[1], bbox_regression[:1].numpy(), atol=1e-4, rtol=0)
    # Without that, its last 6 anchors (the 1 x 1 map) are wrong.
    plain = run_opencv_dnn(ssdlite["head"], images[:1].numpy())
    np.testing.assert_allclose(plain[0][:, :-6], cls_logits[:1, :-6].numpy(), atol=1e-4, rtol=0)
    assert np.abs(plain[0][:, -6:] - cls_logits[:1, -6:].numpy()).max() > 1e-2
    # The full detector (dynamic shapes, NMS) is beyond OpenCV DNN: a clear error, not a crash.
    with pytest.raises(UserError, match="OpenCV DNN cannot read this model .*Shape"):
        run_opencv_dnn(ssdlite["full"], images[:1].numpy())


def test_ssdlite_full_detector_final_detections_match(ssdlite):
    detector, session = ssdlite["detector"], ort_session(ssdlite["full"], threads=1)
    image = ssdlite["image"]
    with torch.no_grad():
        eager = detector([image])[0]
    boxes, scores, labels = ort_run(session, [image])
    result = match_detections(eager, {"boxes": boxes, "scores": scores, "labels": labels})
    # The traced image: every detection is found again, to float precision.
    assert result["count_a"] == result["count_b"] == result["matched"] > 50
    assert result["max_box_err"] < 1e-2 and result["max_score_err"] < 1e-4
    assert set(np.unique(labels)) <= {1, 2}, "label 0 is the background, never returned"
    # Fresh images, at the traced size and at others through the dynamic axes: every detection
    # (300, the cap) is found again. Measured: box error <= 0.008 px (300 x 200), score <= 3e-5.
    for seed, size in [(11, (240, 320)), (5, (300, 200)), (7, (480, 640))]:
        other = torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))
        assert not torch.equal(other[:, :240, :200], image[:, :240, :200])
        with torch.no_grad():
            eager_other = detector([other])[0]
        boxes, scores, labels = ort_run(session, [other])
        result = match_detections(eager_other, {"boxes": boxes, "scores": scores, "labels": labels})
        assert result["count_a"] == result["count_b"] == result["matched"] > 50, (size, result)
        assert result["max_box_err"] < 0.05 and result["max_score_err"] < 1e-4, (size, result)
