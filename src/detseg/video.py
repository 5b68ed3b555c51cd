"""Frames in, frames out: one ``--source`` flag for webcam, video file, image folder or a synthetic stream.

- :func:`open_source` turns the flag into a :class:`FrameSource`: ``"0"`` / ``"1"`` (webcam index),
  a video file, a folder of images (sorted by name), or ``"synthetic"`` (moving shapes, generated,
  deterministic; needs no camera and no file). Iterating a source yields :class:`Frame` objects
  (RGB uint8 image, index, timestamp in seconds).
- :class:`FPSMeter` (smoothed over a window), :func:`draw_fps`, :class:`VideoWriter` (``mp4v`` in
  .mp4, falling back to ``MJPG`` in .avi where the MP4 encoder is missing).
- :func:`run_loop` reads, processes, annotates, writes and optionally shows frames; with
  ``show=False`` (the scripts' ``--no-show``) it never opens a window.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detseg.data.imageio import IMAGE_SUFFIXES, read_image
from detseg.errors import UserError

SOURCE_HELP = "a webcam index (0, 1, ...), a video file, a folder of images, or 'synthetic'"


@dataclass
class Frame:
    """One frame: ``image`` RGB uint8 [H, W, 3], 0-based ``index``, ``timestamp`` in seconds
    (position in the video, ``index / fps`` for folders and the synthetic stream, wall-clock time
    since opening for a webcam)."""

    image: np.ndarray
    index: int
    timestamp: float


class FrameSource:
    """Base of the frame sources: iterate it for :class:`Frame` objects; use it as a context manager.

    Attributes:
        name: what it reads (shown in messages).
        fps: nominal frame rate (from the file or camera; chosen for folders and synthetic).
        num_frames: number of frames when known in advance, else ``None`` (webcam).
    """

    name: str = ""
    fps: float = 30.0
    num_frames: int | None = None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the camera or file (a no-op for sources without one)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CaptureSource(FrameSource):
    """A webcam or a video file read by ``cv2.VideoCapture``. Open it with :func:`open_source`."""

    def __init__(self, capture: Any, name: str, *, is_camera: bool) -> None:
        self.capture = capture
        self.name = name
        self.is_camera = is_camera
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else 30.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.num_frames = None if is_camera or count <= 0 else count

    def __iter__(self) -> Iterator[Frame]:
        if not self.is_camera:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        start = time.monotonic()
        index = 0
        while True:
            ok, bgr = self.capture.read()
            if not ok or bgr is None:
                return
            stamp = time.monotonic() - start if self.is_camera else index / self.fps
            yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index, stamp)
            index += 1

    def close(self) -> None:
        self.capture.release()


class FolderSource(FrameSource):
    """The images of a folder in name order, as frames at a nominal ``fps``."""

    def __init__(self, folder: Path, fps: float = 10.0) -> None:
        self.name = str(folder)
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise UserError(
                "the folder holds no images",
                path=folder,
                fix=f"put {', '.join(IMAGE_SUFFIXES)} files there, or use --source synthetic",
            )
        self.fps = fps
        self.num_frames = len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            yield Frame(read_image(path), index, index / self.fps)


class SyntheticSource(FrameSource):
    """A generated stream: a circle, a square and a triangle bouncing over a gradient background.

    Every frame is a pure function of its index (no randomness, no files), so tests and demos see
    the same pictures on every machine. :meth:`objects` gives each frame's ground-truth boxes.

    Args:
        num_frames: length of the stream.
        width, height: frame size in pixels.
        fps: nominal frame rate (timestamps are ``index / fps``).
    """

    CLASSES = ("circle", "square", "triangle")
    COLORS = ((230, 40, 40), (40, 200, 60), (50, 90, 230))  # RGB per class
    # Per shape: size (px), start (x, y) as a fraction of the free range, speed (px / frame).
    _MOTION = (
        (36, (0.1, 0.3), (3.0, 2.0)),
        (30, (0.6, 0.1), (-2.0, 3.0)),
        (40, (0.4, 0.8), (2.5, -1.5)),
    )

    def __init__(
        self, num_frames: int = 300, width: int = 320, height: int = 240, fps: float = 30.0
    ) -> None:
        self.name = "synthetic"
        self.num_frames = num_frames
        self.width, self.height, self.fps = width, height, fps
        ramp = np.linspace(40, 110, height, dtype=np.float32)[:, None]  # [H, 1]
        shade = np.linspace(0, 40, width, dtype=np.float32)[None, :]  # [1, W]
        channels = [
            ramp + shade,
            ramp + 0.5 * shade,
            np.broadcast_to(150 - 0.5 * ramp, (height, width)),
        ]  # each [H, W]
        self.background = np.stack(channels, axis=2).astype(np.uint8)  # [H, W, 3]

    @staticmethod
    def _bounce(start: float, speed: float, index: int, span: float) -> float:
        if span <= 0:
            return 0.0
        position = (start + speed * index) % (2 * span)
        return position if position <= span else 2 * span - position

    def objects(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of frame ``index``: boxes float32 [3, 4] xyxy and labels int64 [3] (0..2)."""
        boxes = np.zeros((len(self._MOTION), 4), dtype=np.float32)
        for row, (size, (fx, fy), (vx, vy)) in enumerate(self._MOTION):
            span_x, span_y = self.width - size, self.height - size
            x0 = self._bounce(fx * span_x, vx, index, span_x)
            y0 = self._bounce(fy * span_y, vy, index, span_y)
            boxes[row] = (x0, y0, x0 + size, y0 + size)
        return boxes, np.arange(len(self._MOTION), dtype=np.int64)

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB uint8 [height, width, 3]."""
        image = self.background.copy()
        boxes, labels = self.objects(index)
        for (x0, y0, x1, y1), label in zip(boxes.round().astype(int), labels):
            color = self.COLORS[label]
            if label == 0:
                center = ((x0 + x1) // 2, (y0 + y1) // 2)
                cv2.circle(image, center, (x1 - x0) // 2, color, -1, cv2.LINE_AA)
            elif label == 1:
                cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), color, -1)
            else:
                points = np.array([[(x0 + x1) // 2, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]], np.int32)
                cv2.fillPoly(image, [points], color, cv2.LINE_AA)
        return image

    def __iter__(self) -> Iterator[Frame]:
        for index in range(self.num_frames):
            yield Frame(self.render(index), index, index / self.fps)


def _open_capture(target: int | str) -> Any:
    """``cv2.VideoCapture(target)`` with OpenCV's own warnings silenced (we raise a clear error)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(target)
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_source(
    source: str | Path, *, synthetic_frames: int = 300, folder_fps: float = 10.0
) -> FrameSource:
    """Open what a ``--source`` flag names.

    Args:
        source: ``"0"``, ``"1"``, ... (webcam index), a video file, a folder of images, or
            ``"synthetic"``.
        synthetic_frames: length of the synthetic stream.
        folder_fps: nominal frame rate given to an image folder.
    Returns:
        A :class:`FrameSource`; close it (or use ``with``) to release a camera or file.
    Raises:
        UserError: the webcam does not open, the path does not exist, or the file is not a
            readable video; the message suggests ``--source synthetic``.
    """
    text = str(source)
    if text == "synthetic":
        return SyntheticSource(num_frames=synthetic_frames)
    if text.isdigit():
        capture = _open_capture(int(text))
        if not capture.isOpened():
            raise UserError(
                f"cannot open webcam {text} (no camera at that index, or no permission)",
                fix="connect a camera or try another index, or use --source synthetic or a video file",
            )
        return CaptureSource(capture, f"webcam {text}", is_camera=True)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, fps=folder_fps)
    if not path.is_file():
        raise UserError("no such file or folder", path=path, fix=f"--source takes {SOURCE_HELP}")
    capture = _open_capture(str(path))
    if not capture.isOpened():
        raise UserError(
            "cannot open this file as a video (not a video, or a codec this OpenCV lacks)",
            path=path,
            fix="convert it to MP4 (mp4v/H.264) or MJPG AVI, or use --source synthetic",
        )
    return CaptureSource(capture, str(path), is_camera=False)


class FPSMeter:
    """Frames per second, smoothed over the last ``window`` frames.

    Call :meth:`tick` once per frame; it returns the current estimate (0 until two ticks).
    ``clock`` is injectable for tests (default ``time.perf_counter``).
    """

    def __init__(self, window: int = 30, clock: Callable[[], float] = time.perf_counter) -> None:
        if window < 2:
            raise ValueError("window must be >= 2")
        self.clock = clock
        self.times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self.times.append(self.clock())
        return self.fps

    @property
    def fps(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def draw_fps(frame: np.ndarray, fps: float) -> np.ndarray:
    """A copy of ``frame`` (RGB uint8 [H, W, 3]) with ``FPS 12.3`` on a dark box in the top-left."""
    image = np.ascontiguousarray(frame).copy()
    text = f"FPS {fps:.1f}"
    scale = max(0.4, image.shape[0] / 600)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (width + 8, height + baseline + 8), (0, 0, 0), -1)
    cv2.putText(
        image, text, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), 1, cv2.LINE_AA
    )
    return image


class VideoWriter:
    """Write RGB frames to a video file; opened on the first frame (which sets the size).

    ``.mp4`` is written with the ``mp4v`` codec; if this OpenCV cannot encode it, the file becomes
    ``<name>.avi`` with ``MJPG`` (``.path`` says where it went). ``.avi`` uses ``MJPG`` directly.
    """

    CODECS = {".mp4": ("mp4v", ".mp4"), ".avi": ("MJPG", ".avi")}

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        self.path = Path(path)
        self.fps = fps
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._writer: Any = None

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        first = self.CODECS.get(self.path.suffix.lower(), self.CODECS[".mp4"])
        for fourcc, suffix in (first, self.CODECS[".avi"]):
            target = self.path.with_suffix(suffix)
            writer = cv2.VideoWriter(
                str(target), cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height)
            )
            if writer.isOpened():
                self._writer, self.path, self.size = writer, target, (width, height)
                return
            writer.release()
        raise UserError(
            "OpenCV can write neither mp4v MP4 nor MJPG AVI here",
            path=self.path,
            fix="install an OpenCV build with FFmpeg (opencv-python), or leave out the output file",
        )

    def write(self, frame: np.ndarray) -> None:
        """Append an RGB uint8 [H, W, 3] frame; every frame must have the first frame's size."""
        height, width = frame.shape[:2]
        if self._writer is None:
            self._open(width, height)
        elif (width, height) != self.size:
            raise ValueError(f"frame size {(width, height)} differs from the video's {self.size}")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_loop(
    source: str | Path | FrameSource,
    process_fn: Callable[[Frame], np.ndarray | None],
    *,
    writer_path: str | Path | None = None,
    show: bool = False,
    max_frames: int | None = None,
    window_name: str = "detseg",
) -> dict[str, Any]:
    """Read frames, process them, overlay the FPS, write and / or show them.

    Args:
        source: a ``--source`` string (see :func:`open_source`) or an open :class:`FrameSource`
            (closed at the end either way).
        process_fn: ``frame -> annotated RGB image`` (``None``: keep ``frame.image``).
        writer_path: video file to write (``.mp4`` or ``.avi``), or ``None``.
        show: display frames with ``cv2.imshow`` (q or Esc stops). ``False`` never opens a window.
        max_frames: stop after this many frames (``None``: until the source ends).
    Returns:
        ``{"frames": processed count, "fps": mean frames per second of the whole loop,
        "output": the written file or None}``.
    """
    if show and sys.platform.startswith("linux") and not _has_display():
        raise UserError(
            "cannot show frames: no display (DISPLAY / WAYLAND_DISPLAY is not set)",
            fix="run with --no-show (and --output FILE to keep the video)",
        )
    frames_source = source if isinstance(source, FrameSource) else open_source(source)
    writer = None if writer_path is None else VideoWriter(writer_path, fps=frames_source.fps)
    meter = FPSMeter()
    count = 0
    start = time.perf_counter()
    try:
        for frame in frames_source:
            if max_frames is not None and count >= max_frames:
                break
            output = process_fn(frame)
            output = frame.image if output is None else output
            output = draw_fps(output, meter.tick())
            count += 1
            if writer is not None:
                writer.write(output)
            if show and _show(window_name, output):
                break
    finally:
        frames_source.close()
        if writer is not None:
            writer.close()
        if show:
            cv2.destroyAllWindows()
    elapsed = time.perf_counter() - start
    return {
        "frames": count,
        "fps": count / elapsed if elapsed > 0 else 0.0,
        "output": None if writer is None or writer.frames == 0 else writer.path,
    }


def _has_display() -> bool:
    """Whether a window can open on Linux (a Qt/GTK OpenCV aborts the process without a display)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _show(window_name: str, image: np.ndarray) -> bool:
    """Show one frame; True when the user pressed q or Esc."""
    try:
        cv2.imshow(window_name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as err:
        raise UserError(
            "cannot open a window (no display, or an OpenCV built without GUI support)",
            fix="run with --no-show (and --output FILE to keep the video)",
        ) from err
    return key in (ord("q"), 27)
