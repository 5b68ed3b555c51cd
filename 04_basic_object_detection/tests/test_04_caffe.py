"""The seed's Caffe MobileNet-SSD on OpenCV DNN: the prototxt written here, weights in the hub
cache (random ones, hand-encoded in Caffe's protobuf format), priors and the DetectionOutput layer
re-computed in numpy and compared with OpenCV's, the [1, 1, N, 7] decoding, offline errors."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import caffe_mobilenet_ssd as caffe
import cv2
import numpy as np
import pytest

from detseg.errors import UserError


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub (TORCH_HOME) where downloads always fail: tests never use the network."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def frame(seed: int, shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


def test_prototxt_file_is_the_generated_one_and_lists_the_published_layers() -> None:
    text = caffe.PROTOTXT.read_text()
    assert text == caffe.deploy_prototxt()
    # 1 + 13 x 2 backbone convs + 4 x 2 extras + 6 x 2 heads, each body conv followed by a ReLU
    assert text.count('type: "Convolution"') == 1 + 26 + 8 + 12
    assert text.count('type: "ReLU"') == 1 + 26 + 8
    assert text.count('type: "PriorBox"') == 6 and "num_classes: 21" in text
    assert "group: 1024" in text and 'name: "conv17_2_mbox_conf"' in text


def test_protobuf_varints_by_hand() -> None:
    assert caffe._varint(1) == b"\x01"
    assert caffe._varint(300) == b"\xac\x02"  # 300 = 0b10_0101100 -> 0xac 0x02
    assert caffe._varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes
    # BlobProto: shape {dim: 2 dim: 1} (field 7 > field 1, packed) and data (field 5, packed)
    blob = caffe.encode_blob(np.array([[1.0], [2.0]], np.float32))
    assert blob[:6] == bytes([7 << 3 | 2, 4, 1 << 3 | 2, 2, 2, 1])
    assert blob[6:8] == bytes([5 << 3 | 2, 8]) and blob[8:] == np.float32([1, 2]).tobytes()


def test_priors_by_hand_and_equal_to_opencv(hub: Path) -> None:
    assert caffe.feature_sizes() == [19, 10, 5, 3, 2, 1]
    priors = caffe.prior_boxes()
    assert priors.shape == (19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4) == (1917, 4)
    step = 300 / 19  # first cell of conv11: centre step / 2, a 60 px square, then 2:1 and 1:2
    centre = step / 2 / 300
    np.testing.assert_allclose(priors[0], [centre - 0.1, centre - 0.1, centre + 0.1, centre + 0.1],
                               atol=1e-6)  # fmt: skip
    wide = 60 * np.sqrt(2) / 2 / 300
    np.testing.assert_allclose(priors[1, [0, 2]], [centre - wide, centre + wide], atol=1e-6)
    last = np.sqrt(285 * 300) / 2 / 300  # conv17_2 (1 cell): second box is sqrt(min * max)
    np.testing.assert_allclose(priors[-5], [0.5 - last, 0.5 - last, 0.5 + last, 0.5 + last],
                               atol=1e-6)  # fmt: skip
    net = caffe.load_net(caffe.random_caffemodel(hub / "r.caffemodel"))
    net.setInput(caffe.to_blob(frame(0)))
    opencv = net.forward("mbox_priorbox")  # [1, 2, P * 4]: boxes, then variances
    np.testing.assert_allclose(opencv[0, 0].reshape(-1, 4), priors, atol=1e-6)
    np.testing.assert_allclose(opencv[0, 1].reshape(-1, 4), np.tile(caffe.VARIANCES, (1917, 1)))


def drop_padding(rows: np.ndarray) -> np.ndarray:
    rows = rows[0, 0]
    rows = rows[rows[:, 1] >= 1]
    return rows[np.lexsort((rows[:, 3], -rows[:, 2]))]


@pytest.mark.parametrize("seed, conf_bias", [(0, {7: 3.0, 15: 2.5}), (1, {12: 2.0})])
def test_cached_random_caffemodel_runs_and_numpy_detection_output_equals_opencv(
    hub: Path, seed: int, conf_bias: dict[int, float]
) -> None:
    path = caffe.weights_path()
    assert path == hub / "hub" / "checkpoints" / "MobileNetSSD_deploy.caffemodel"
    caffe.random_caffemodel(path, seed=seed, conf_bias=conf_bias)
    assert caffe.caffe_weights() == path  # the cached file is used as it is, no download
    net = caffe.load_net()
    net.setInput(caffe.to_blob(frame(seed)))
    out, loc, conf = net.forward(["detection_out", "mbox_loc", "mbox_conf_flatten"])
    assert out.shape == (1, 1, caffe.KEEP_TOP_K, 7)
    opencv = drop_padding(out)
    assert len(opencv) >= 20 and set(np.unique(opencv[:, 1])) >= set(conf_bias)
    mine = drop_padding(caffe.detection_output(loc[0], conf[0]))
    assert mine.shape == opencv.shape
    np.testing.assert_allclose(mine, opencv, atol=1e-5)


def test_decode_detection_out_by_hand() -> None:
    rows = np.zeros((1, 1, 5, 7), np.float32)  # OpenCV pads with zero rows (label 0)
    rows[0, 0, 0] = [0, 15, 0.6, 0.1, 0.2, 0.5, 0.9]
    rows[0, 0, 1] = [0, 7, 0.9, -0.1, 0.5, 1.2, 0.75]  # past the border: clipped
    rows[0, 0, 2] = [0, 12, 0.4, 0.0, 0.0, 1.0, 1.0]  # below the threshold
    found = caffe.decode_detection_out(rows, (200, 400), score_threshold=0.5)
    np.testing.assert_array_equal(found["labels"], [7, 15])
    np.testing.assert_allclose(found["scores"], [0.9, 0.6])
    np.testing.assert_allclose(found["boxes"], [[0, 100, 400, 150], [40, 40, 200, 180]], atol=1e-4)
    assert [caffe.VOC_CLASSES[i] for i in found["labels"]] == ["car", "person"]
    assert len(caffe.decode_detection_out(rows, (200, 400), 0.0)["labels"]) == 3
    with pytest.raises(ValueError, match="1, 1, N, 7"):
        caffe.decode_detection_out(rows[0], (200, 400))


def test_detect_image_with_the_caffe_model_names_voc_classes(
    script, hub: Path, tmp_path: Path
) -> None:
    caffe.random_caffemodel(caffe.weights_path(), conf_bias={7: 6.0})  # "car" wins everywhere
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), frame(3, (180, 500)))
    results = script("detect_image").main(
        [str(image), "--model", "mobilenet_ssd_caffe", "--output-dir", str(tmp_path / "out")]
    )
    assert results[0]["names"] and set(results[0]["names"]) == {"car"}
    boxes = np.asarray(results[0]["boxes"])
    assert boxes[:, [0, 2]].max() <= 500 and boxes[:, [1, 3]].max() <= 180
    assert (tmp_path / "out" / "street.png").is_file()


def test_offline_error_names_the_url_the_path_and_the_alternative(hub: Path) -> None:
    with pytest.raises(UserError) as caught:
        caffe.caffe_weights()
    message = caught.value.message()
    assert caffe.WEIGHTS_URL in message and str(caffe.weights_path()) in message
    assert "--runtime opencv" in message and "\n" not in message
    assert not caffe.weights_path().with_name("MobileNetSSD_deploy.caffemodel.part").exists()


def test_detect_image_offline_is_one_line_with_exit_2(
    script, hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detseg.errors import run_cli

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), frame(4, (64, 64)))
    argv = [str(image), "--model", "mobilenet_ssd_caffe", "--output-dir", str(tmp_path)]
    assert run_cli(script("detect_image").main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and caffe.WEIGHTS_URL in err


def test_a_truncated_caffemodel_is_one_clear_error(hub: Path) -> None:
    path = caffe.random_caffemodel(caffe.weights_path())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot read these Caffe weights"):
        caffe.load_net()
