"""detseg.viz.diagrams and assets/make_assets.py: the figures are right, drawn, and reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torchvision.ops import roi_align

from detseg.bench import repo_root
from detseg.scripts import load_script
from detseg.viz import diagrams

ASSETS = repo_root() / "assets"


def _bilinear(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """Bilinear sample of feature [C, H, W] at an inside point (y, x) -> [C]."""
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    dy, dx = y - y0, x - x0
    return (
        feature[:, y0, x0] * (1 - dy) * (1 - dx)
        + feature[:, y0, x0 + 1] * (1 - dy) * dx
        + feature[:, y0 + 1, x0] * dy * (1 - dx)
        + feature[:, y0 + 1, x0 + 1] * dy * dx
    )


@pytest.mark.parametrize(
    "output_size,sampling_ratio,scale", [(2, 2, 1.0), (7, 2, 0.125), (3, 4, 0.5)]
)
def test_roi_align_sample_points_are_torchvision_s(output_size, sampling_ratio, scale):
    """Averaging the bilinear samples at the drawn points bin by bin gives roi_align's output."""
    generator = np.random.default_rng(output_size)
    feature = generator.normal(size=(3, 24, 24))
    for _ in range(5):
        corner = generator.uniform(2, 8, 2) / scale
        size = generator.uniform(3, 12, 2) / scale
        box = (*corner, *(corner + size))  # xyxy in input pixels, inside the map
        ys, xs = diagrams.roi_align_sample_points(box, output_size, sampling_ratio, scale)
        assert ys.shape == xs.shape == (output_size * sampling_ratio,)
        mine = np.zeros((3, output_size, output_size))
        for i in range(output_size):
            for j in range(output_size):
                rows = ys[i * sampling_ratio : (i + 1) * sampling_ratio]
                cols = xs[j * sampling_ratio : (j + 1) * sampling_ratio]
                mine[:, i, j] = np.mean(
                    [_bilinear(feature, y, x) for y in rows for x in cols], axis=0
                )
        theirs = roi_align(
            torch.from_numpy(feature)[None],
            [torch.tensor([box], dtype=torch.float64)],
            output_size,
            spatial_scale=scale,
            sampling_ratio=sampling_ratio,
            aligned=False,
        )[0]
        np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-10)


def test_roi_align_points_of_a_hand_case():
    # box 0..4 on a 2x2 grid, 2 samples per bin: bins of 2, samples at 0.5 and 1.5 of each bin
    ys, xs = diagrams.roi_align_sample_points((0.0, 0.0, 4.0, 4.0), 2, 2)
    np.testing.assert_allclose(ys, [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(xs, ys)


@pytest.mark.parametrize("name", list(diagrams.DIAGRAMS))
def test_each_diagram_draws_a_reproducible_png(name):
    figure = diagrams.DIAGRAMS[name]()
    assert isinstance(figure, Figure)
    assert figure.axes and (figure.axes[0].patches or figure.axes[0].lines)
    first, second = diagrams.png_bytes(figure), diagrams.png_bytes(diagrams.DIAGRAMS[name]())
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and len(first) > 5000
    assert first == second  # no date or version inside: the same drawing, the same bytes


def test_iou_figure_states_the_right_iou():
    title = diagrams.iou_figure()._suptitle.get_text()
    assert title.endswith("= 9 / 36 = 0.250")  # boxes 5x4 and 5x5 sharing a 3x3 square


def test_committed_assets_match_their_code(tmp_path):
    make_assets = load_script(ASSETS, "make_assets")
    assert make_assets.main(["--check"]) == [], "run: make assets"
    # the check names what changed: a copy with one PNG altered
    make_assets.main(["--out", str(tmp_path), "--only", "iou", "fpn"])
    (tmp_path / "fpn.png").write_bytes(b"not the drawing")
    assert make_assets.main(["--check", "--out", str(tmp_path), "--only", "iou", "fpn"]) == ["fpn"]
