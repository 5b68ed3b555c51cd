"""SSD body + shared decoding equal torchvision; ONNX Runtime and OpenCV DNN match PyTorch; the
pretrained dict loads hub-cached weights and says what to do offline; the classic detectors."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from detection_zoo import COCO_CATEGORIES, PRETRAINED, build_pretrained, build_ssdlite320
from detector_body import DecodeConfig, SSDBody, decode_boxes, postprocess, to_body_input
from detector_runtime import body_predictor, haar_faces

from detseg.errors import UserError
from detseg.export import export_onnx, match_detections, ort_session, run_opencv_dnn
from detseg.pretrained import cache_path


def lively_ssd(seed: int = 0) -> torch.nn.Module:
    """A random SSDlite whose outputs are not degenerate: BatchNorm statistics set from a few
    random images (a fresh model's running stats make activations vanish) and a wider spread of
    head weights, so scores differ and boxes move."""
    torch.manual_seed(seed)
    model = build_ssdlite320(4, width_mult=0.5, score_thresh=0.9)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.backbone(torch.rand(2, 3, 320, 320) * 2 - 1)
        for parameter in model.head.parameters():
            if parameter.dim() == 4:
                parameter.mul_(8.0)
    model.detections_per_img = 300  # keep the cut far from the ties of near-equal scores
    return model.eval()


def test_decode_equals_torchvision_box_coder() -> None:
    from torchvision.models.detection._utils import BoxCoder

    generator = torch.Generator().manual_seed(0)
    anchors = torch.rand(50, 2, generator=generator) * 200
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(50, 2, generator=generator) * 80], 1)
    regressions = torch.randn(50, 4, generator=generator) * 3
    regressions[0, 2] = 100.0  # beyond the log-scale clamp
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    expected = coder.decode_single(regressions, anchors)
    mine = decode_boxes(regressions.numpy(), anchors.numpy(), (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(mine, expected.numpy(), rtol=1e-5, atol=1e-3)


def test_decode_by_hand() -> None:
    anchors = np.array([[0.0, 0.0, 10.0, 20.0]], np.float32)  # centre (5, 10), size 10 x 20
    regressions = np.array([[10.0, -5.0, 0.0, 5 * np.log(2.0)]], np.float32)  # dx 1, dy -0.5
    np.testing.assert_allclose(
        decode_boxes(regressions, anchors, (10, 10, 5, 5)), [[10, -20, 20, 20]], atol=1e-5
    )


def test_body_and_postprocess_equal_the_whole_torchvision_ssd() -> None:
    model = lively_ssd()
    image = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model([image[0]])[0]
        regressions, logits = SSDBody(model).eval()(image)
    mine = postprocess(regressions[0].numpy(), logits[0].numpy(), DecodeConfig.from_ssd(model))
    assert len(expected["boxes"]) >= 5
    np.testing.assert_allclose(mine["boxes"], expected["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(mine["scores"], expected["scores"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(mine["labels"], expected["labels"].numpy())


def test_onnx_body_on_onnxruntime_and_opencv_matches_pytorch(tmp_path: Path) -> None:
    model = lively_ssd(seed=2)
    body = SSDBody(model).eval()
    traced = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    path = export_onnx(body.exportable(), traced, tmp_path / "body.onnx", input_names=["images"],
                       output_names=["regressions", "logits"])  # fmt: skip
    config = DecodeConfig.from_ssd(model)
    classes = ["__background__", "a", "b", "c"]
    predictors = {
        runtime: body_predictor(
            runtime, config, classes, body=body, onnx_path=path, score_threshold=0.9
        )  # fmt: skip
        for runtime in ("torch", "onnxruntime", "opencv")
    }
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
              rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)]  # fmt: skip
    for image in images:  # neither is the traced input
        found = {runtime: predictor(image) for runtime, predictor in predictors.items()}
        assert 2 <= len(found["torch"]["boxes"]) < config.detections_per_img
        assert found["torch"]["boxes"][:, 2].max() <= image.shape[1] + 1e-3
        for other in ("onnxruntime", "opencv"):
            match = match_detections(found["torch"], found[other])
            assert match["matched"] == match["count_a"] == match["count_b"]
            assert match["max_box_err"] < 1e-2 and match["max_score_err"] < 1e-4


def _onnx_runs(
    module: torch.nn.Module, example: torch.Tensor, path: Path, output_names: list[str]
) -> dict[str, list]:
    """``module``'s outputs on ``example`` in PyTorch, ONNX Runtime and OpenCV DNN (exported to
    ``path`` with a plain trace)."""
    module = module.eval()
    export_onnx(module, example, path, input_names=["images"], output_names=output_names)
    with torch.no_grad():
        eager = module(example)
    eager = [t.numpy() for t in (eager if isinstance(eager, tuple) else (eager,))]
    session = ort_session(path)
    return {"torch": eager, "onnxruntime": session.run(None, {"images": example.numpy()}),
            "opencv": [o.reshape(e.shape) for o, e in
                       zip(run_opencv_dnn(path, example.numpy()), eager)]}  # fmt: skip


def test_exportable_body_is_right_on_opencv_where_the_plain_body_is_not(tmp_path: Path) -> None:
    """SSDlite320's last map is 1 x 1: the depthwise 3 x 3 convolution of both heads there hits
    OpenCV DNN's bug pinned in tests/test_export.py. ``exportable()`` swaps them for their centre taps; the raw outputs of all three
    runtimes then agree to float precision, on BatchNorm statistics of real activations."""
    from detection_zoo import calibrate_batchnorm

    torch.manual_seed(0)
    model = calibrate_batchnorm(build_ssdlite320(7, width_mult=0.5), torch.rand(8, 3, 320, 320))
    body = SSDBody(model).eval()
    exportable = body.exportable()
    assert sorted(exportable.single_pixel_convs) == [
        "head.classification_head.module_list.5.0.0",
        "head.regression_head.module_list.5.0.0",
    ]
    assert model.head.regression_head.module_list[5][0][0].kernel_size == (3, 3)  # not touched
    assert exportable.head.regression_head.module_list[5][0][0].kernel_size == (1, 1)
    image = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    names = ["regressions", "logits"]
    plain = _onnx_runs(body, image, tmp_path / "plain.onnx", names)
    fixed = _onnx_runs(exportable, image, tmp_path / "exportable.onnx", names)
    scale = max(float(np.abs(a).max()) for a in plain["torch"])

    def max_diff(runs: dict[str, list], runtime: str) -> float:
        return max(float(np.abs(a - b).max()) for a, b in zip(plain["torch"], runs[runtime]))

    assert max_diff(fixed, "torch") < 1e-6 * scale  # the same function in PyTorch
    assert max_diff(plain, "onnxruntime") < 1e-4 * scale
    assert max_diff(plain, "opencv") > 0.1 * scale  # the bug, on the last map's outputs
    assert max_diff(fixed, "onnxruntime") < 1e-4 * scale
    assert max_diff(fixed, "opencv") < 1e-4 * scale


def test_to_body_input_layout() -> None:
    image = np.zeros((10, 20, 3), np.uint8)
    image[..., 0] = 255
    blob = to_body_input(image, 32)
    assert blob.shape == (1, 3, 32, 32) and blob.dtype == np.float32
    assert blob[0, 0].min() == 1.0 and blob[0, 1:].max() == 0.0


def test_pretrained_dict_urls_and_categories() -> None:
    assert len(PRETRAINED) == 9
    assert COCO_CATEGORIES[1] == "person" and len(COCO_CATEGORIES) == 91
    for name, (builder, weights) in PRETRAINED.items():
        # torchvision names each file with the first hex digits of its SHA-256 (checked on download)
        assert re.search(r"-[0-9a-f]{8,}\.pth$", weights.url), name
        assert len(weights.meta["categories"]) == 91, name
        assert builder.__name__ == name


def test_pretrained_loads_the_hub_cache_file_and_says_what_to_do_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = "ssdlite320_mobilenet_v3_large"
    path = cache_path(PRETRAINED[name][1])
    assert path.name == "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as info:
        build_pretrained(name)
    message = info.value.message()
    assert PRETRAINED[name][1].url in message and str(path) in message
    assert "train_detector.py" in message

    torch.manual_seed(4)
    saved = build_pretrained(name, load_weights=False)[0].state_dict()
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    model, classes = build_pretrained(name)
    assert classes[18] == "dog"
    for key in (
        "head.classification_head.module_list.0.1.weight",
        "backbone.features.0.0.0.weight",
    ):
        torch.testing.assert_close(model.state_dict()[key], saved[key])


def test_haar_cascade_finds_the_astronauts_face() -> None:
    import skimage.data

    found = haar_faces(skimage.data.astronaut())
    assert len(found["boxes"]) == 1
    x1, y1, x2, y2 = found["boxes"][0]
    # her face spans about x 180-265, y 65-160 of the 512 x 512 photo
    assert 150 < x1 < 200 and 240 < x2 < 300 and 40 < y1 < 90 and 140 < y2 < 190
    assert len(haar_faces(np.full((200, 200, 3), 128, np.uint8))["boxes"]) == 0


def test_calibrate_batchnorm_gives_activations_of_a_real_size() -> None:
    from detection_zoo import calibrate_batchnorm

    torch.manual_seed(0)
    model = build_ssdlite320(3, width_mult=0.5).eval()
    images = torch.rand(2, 3, 320, 320)
    with torch.no_grad():
        before = SSDBody(model)(images)[0].abs().max()
        calibrate_batchnorm(model, images)
        after = SSDBody(model)(images)[0].abs().max()
    assert before < 1e-8 < 1e-3 < after  # fresh running stats make activations vanish
    assert not model.training


def test_recompute_batchnorm_makes_eval_mode_see_what_training_saw() -> None:
    """The bug behind the first 10-minute SSDlite runs (AP50 0.005): evaluation used running
    averages that still held their start values, so eval mode computed another function than the
    one trained. After :func:`recompute_batchnorm` on a batch, eval mode gives what the network
    gives with that batch's own statistics (train-mode BatchNorm), up to var's n / (n - 1)."""
    from detection_zoo import recompute_batchnorm

    torch.manual_seed(0)
    model = build_ssdlite320(4, width_mult=0.5)
    images = [torch.rand(3, 256, 256) for _ in range(16)]
    body = SSDBody(model)
    batch = torch.nn.functional.interpolate(torch.stack(images), size=(320, 320), mode="bilinear")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()
        for norm in norms:  # batch statistics, running averages left as they are
            norm.train()
            norm.momentum = 0.0
        seen_in_training = body(batch)[1]
        for norm in norms:
            norm.momentum = 0.03
        model.eval()
        stale = body(batch)[1]
        recompute_batchnorm(model, [images])
        assert not model.training and all(n.momentum == 0.03 for n in norms)
        recomputed = body(batch)[1]
    scale = seen_in_training.std()
    assert (stale - seen_in_training).abs().mean() > 0.3 * scale  # the bug: another function
    # equal where a channel has many values per batch (the 20 x 20 map: 6 boxes per cell); on
    # the 1 x 1 maps (16 values) the running variance is the unbiased one, x 16 / 15
    first_map = slice(0, 20 * 20 * 6)
    error = (recomputed - seen_in_training).abs()
    assert error[:, first_map].max() < 0.05 * scale  # measured 0.026
    assert error.mean() < 0.02 * scale  # measured 0.004; stale: 0.76
    assert all(int(n.num_batches_tracked) == 1 for n in norms)
