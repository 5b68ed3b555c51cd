"""Tests of detseg.video: synthetic stream, folder and file sources, writer round trip, FPS, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from detseg.data.imageio import write_image
from detseg.errors import UserError
from detseg.video import (
    FolderSource,
    FPSMeter,
    SyntheticSource,
    VideoWriter,
    draw_fps,
    open_source,
    run_loop,
)


def test_synthetic_stream_is_deterministic_and_matches_its_ground_truth():
    source = open_source("synthetic", synthetic_frames=12)
    assert isinstance(source, SyntheticSource) and source.num_frames == 12
    frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert frames[3].timestamp == pytest.approx(3 / 30)
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8
    again = list(open_source("synthetic", synthetic_frames=12))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again))
    assert not np.array_equal(frames[0].image, frames[5].image), "the shapes move"
    boxes, labels = source.objects(5)
    assert boxes.shape == (3, 4) and labels.tolist() == [0, 1, 2]
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 320) and np.all(boxes[:, 3] <= 240)
    # The square (class 1) fills its box with its colour, where no other shape overlaps.
    x0, y0, x1, y1 = boxes[1].round().astype(int)
    patch = frames[5].image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
    assert np.all(patch == SyntheticSource.COLORS[1])


def test_synthetic_shapes_stay_inside_over_a_long_run():
    source = SyntheticSource(num_frames=1)
    for index in range(0, 2000, 7):
        boxes, _ = source.objects(index)
        assert boxes[:, :2].min() >= 0 and boxes[:, 2].max() <= 320 and boxes[:, 3].max() <= 240


def test_write_video_and_read_it_back(tmp_path: Path):
    source = SyntheticSource(num_frames=15)
    result = run_loop(source, lambda frame: None, writer_path=tmp_path / "out.mp4")
    assert result["frames"] == 15 and result["fps"] > 0
    written = result["output"]
    assert written is not None and written.is_file() and written.stat().st_size > 0
    with open_source(written) as video:
        assert video.num_frames == 15 and video.fps == pytest.approx(30.0)
        frames = list(video)
    assert len(frames) == 15
    assert frames[1].timestamp == pytest.approx(1 / 30)
    # Lossy codec: compare away from the FPS label (top-left), on average.
    for frame in frames[::7]:
        original = source.render(frame.index)
        error = np.abs(frame.image[40:].astype(int) - original[40:].astype(int)).mean()
        assert error < 6, f"frame {frame.index}: mean abs error {error:.1f}"
    # The frames are in order: frame 10 is closer to the original 10 than to the original 0.
    tenth = frames[10].image[40:].astype(int)
    assert (
        np.abs(tenth - source.render(10)[40:]).mean() < np.abs(tenth - source.render(0)[40:]).mean()
    )


def test_writer_avi_and_size_check(tmp_path: Path):
    with VideoWriter(tmp_path / "clip.avi", fps=10) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        with pytest.raises(ValueError, match="differs"):
            writer.write(np.zeros((32, 64, 3), np.uint8))
    assert writer.path.suffix == ".avi" and writer.frames == 1
    assert len(list(open_source(writer.path))) == 1


def test_image_folder_source_sorted(tmp_path: Path):
    for index in (2, 0, 1):
        write_image(tmp_path / f"img_{index:03d}.png", np.full((8, 10, 3), index * 50, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(tmp_path, folder_fps=5)
    assert isinstance(source, FolderSource) and source.num_frames == 3
    frames = list(source)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 50, 100]
    assert [f.timestamp for f in frames] == [0.0, 0.2, 0.4]
    result = run_loop(str(tmp_path), lambda frame: frame.image, max_frames=2)
    assert result["frames"] == 2 and result["output"] is None


def test_bad_sources_raise_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    not_video = tmp_path / "fake.mp4"
    not_video.write_text("hello")
    with pytest.raises(UserError, match="cannot open this file as a video") as info:
        open_source(not_video)
    assert "synthetic" in info.value.message()
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no images"):
        open_source(empty)
    with pytest.raises(UserError, match="cannot open webcam 99") as info:
        open_source("99")  # no machine has 100 cameras
    assert "--source synthetic" in info.value.message()


def test_run_loop_processes_and_never_shows_by_default(tmp_path: Path, monkeypatch):
    import cv2

    def forbidden(*args, **kwargs):
        raise AssertionError("a window was opened with show=False")

    monkeypatch.setattr(cv2, "imshow", forbidden)
    monkeypatch.setattr(cv2, "waitKey", forbidden)
    seen = []
    result = run_loop("synthetic", lambda frame: seen.append(frame.index), max_frames=4)
    assert result["frames"] == 4 and seen == [0, 1, 2, 3]
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(UserError, match="--no-show"):
            run_loop("synthetic", lambda frame: None, show=True, max_frames=1)


def test_fps_meter_with_fake_clock():
    now = [0.0]
    meter = FPSMeter(window=5, clock=lambda: now[0])
    assert meter.tick() == 0.0
    for _ in range(10):
        now[0] += 0.1
        fps = meter.tick()
    assert fps == pytest.approx(10.0)
    now[0] += 0.5  # one slow frame: the window of 5 ticks spans 0.3 + 0.5 s for 4 intervals
    assert meter.tick() == pytest.approx(4 / 0.8)
    with pytest.raises(ValueError):
        FPSMeter(window=1)


def test_draw_fps_touches_top_left_only():
    frame = np.full((120, 160, 3), 128, np.uint8)
    out = draw_fps(frame, 12.34)
    assert np.all(frame == 128), "input unchanged"
    changed = np.any(out != frame, axis=2)
    assert changed[:10, :40].any() and not changed[40:].any() and not changed[:, 100:].any()
