"""Deterministic synthetic scenes: textured backgrounds, clutter, occluding objects with exact masks.

Every built-in dataset (:mod:`detseg.data.recipes`) is drawn with numpy and OpenCV only, by this
module (sprites, compositing, jitter, the ``shapes`` scenes) and its siblings:
:mod:`~detseg.data.synthetic_textures` (colours, backgrounds), :mod:`~detseg.data.synthetic_sprites`
(people, airplanes, faces, motorcycles, raccoons), :mod:`~detseg.data.synthetic_scenes` (detection
scenes and video) and :mod:`~detseg.data.synthetic_semantic` (salt, street, road label maps).

Conventions:
    - Images are float32 [H, W, 3] RGB in 0..255 while being drawn and uint8 once finished.
    - An object is a :class:`Sprite` (its own small canvas: mask + colours) pasted by a
      :class:`Compositor`, which keeps the *visible* mask of every instance: a later object
      removes the pixels it covers from the earlier ones, and a placement that would leave any
      instance with less than ``min_visible`` of its area is refused.
    - Boxes are float32 xyxy in absolute pixels, pixel-edge convention: a mask covering columns
      ``3..5`` gives ``x1 = 3, x2 = 6`` (the same box as ``pycocotools.mask.toBbox``).
    - Randomness comes only from :func:`scene_rng` ``(seed, stream, index)``: image ``index`` of a
      recipe is the same whatever the number of images generated.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from detseg.data.synthetic_textures import (
    BACKGROUND_KINDS,
    make_background,
    ramp,
    random_colour,
    smooth_noise,
    stripes,
)

GENERATOR_VERSION = 2  # bump on any change to what is drawn: cached datasets regenerate
SHAPE_CLASSES = ("circle", "triangle", "rectangle", "star", "ring")


def scene_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of stream ``stream`` (a recipe name) for ``seed`` >= 0."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode()), int(index)])


# ----------------------------------------------------------------------------------- sprites


@dataclass
class Sprite:
    """An object on its own canvas.

    Attributes:
        mask: bool [h, w], the object's pixels.
        rgb: float32 [h, w, 3] in 0..255, its colours (only read where ``mask``).
    """

    mask: np.ndarray
    rgb: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape[0], self.mask.shape[1]


def polygon_mask(height: int, width: int, rings: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Fill polygons in order (value 1 adds, 0 cuts a hole). Points float [K, 2] as (x, y).

    Returns:
        bool [height, width].
    """
    canvas = np.zeros((height, width), np.uint8)
    for points, value in rings:
        fixed = np.round(np.asarray(points, np.float64) * 16).astype(np.int32)  # shift=4 sub-pixel
        cv2.fillPoly(canvas, [fixed], int(value), lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def regular_points(
    centre: tuple[float, float], radii: np.ndarray, rotation: float, aspect: float = 1.0
) -> np.ndarray:
    """Points at equal angles around ``centre`` with the given radii, squashed in y by ``aspect``.

    Returns:
        float [len(radii), 2] as (x, y).
    """
    angles = rotation + np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    local = np.stack([radii * np.cos(angles), radii * np.sin(angles) * aspect], axis=1)
    c, s = np.cos(rotation), np.sin(rotation)
    rotated = local @ np.array([[c, s], [-s, c]])
    return rotated + np.asarray(centre)


def shape_mask(kind: str, rng: np.random.Generator, side: int) -> np.ndarray:
    """A shape of class ``kind`` (one of :data:`SHAPE_CLASSES`) filling a ``side`` x ``side`` canvas.

    Returns:
        bool [side, side].
    """
    r = side / 2 - 0.5
    centre = (side / 2 - 0.5, side / 2 - 0.5)
    rotation = rng.uniform(0, 2 * np.pi)
    if kind == "circle":
        pts = regular_points(centre, np.full(64, r), rotation, aspect=rng.uniform(0.85, 1.0))
        return polygon_mask(side, side, [(pts, 1)])
    if kind == "ring":
        aspect = rng.uniform(0.85, 1.0)
        outer = regular_points(centre, np.full(64, r), rotation, aspect)
        inner = regular_points(centre, np.full(64, r * rng.uniform(0.45, 0.65)), rotation, aspect)
        return polygon_mask(side, side, [(outer, 1), (inner, 0)])
    if kind == "triangle":
        radii = r * rng.uniform(0.85, 1.0, size=3)
        angles = rotation + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.2, 0.2, 3)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1) + centre
        return polygon_mask(side, side, [(pts, 1)])
    if kind == "rectangle":
        aspect = rng.uniform(0.45, 1.0)
        half = np.array([1.0, aspect]) * r / np.hypot(1.0, aspect)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        c, s = np.cos(rotation), np.sin(rotation)
        pts = corners @ np.array([[c, s], [-s, c]]) + centre
        return polygon_mask(side, side, [(pts, 1)])
    if kind == "star":
        points = int(rng.integers(5, 7))
        radii = np.tile([r, r * rng.uniform(0.38, 0.5)], points)
        return polygon_mask(side, side, [(regular_points(centre, radii, rotation), 1)])
    raise ValueError(f"unknown shape {kind!r}; use one of {SHAPE_CLASSES}")


def blob_mask(
    rng: np.random.Generator, height: int, width: int, *, irregularity: float = 0.5
) -> np.ndarray:
    """An irregular blob (random radial polygon) filling a height x width canvas. Returns bool [h, w]."""
    n = int(rng.integers(7, 14))
    radii = 1.0 - irregularity * rng.random(n)
    pts = regular_points((0.0, 0.0), radii, rng.uniform(0, 2 * np.pi))
    pts = (pts + 1.0) * 0.5 * np.array([width - 1, height - 1])
    return polygon_mask(height, width, [(pts, 1)])


def textured_fill(
    rng: np.random.Generator, height: int, width: int, colour: np.ndarray
) -> np.ndarray:
    """Colour a canvas: base colour with a shading ramp and, sometimes, faint noise or stripes.

    Returns:
        float32 [height, width, 3] in 0..255 (not clipped).
    """
    shade = 1.0 + rng.uniform(0.1, 0.45) * (ramp(rng, height, width) - 0.5)
    out = colour * shade
    pattern = rng.random()
    if pattern < 0.3:
        noise = smooth_noise(
            rng, height, width, cells=int(rng.integers(3, 8)), channels=1, octaves=2
        )
        out = out * (0.8 + 0.4 * noise)
    elif pattern < 0.45:
        out = out * (0.88 + 0.24 * stripes(rng, height, width))
    return out.astype(np.float32, copy=False)


def make_sprite(
    rng: np.random.Generator, mask: np.ndarray, colour: np.ndarray | None = None
) -> Sprite:
    """A sprite of ``mask`` coloured by :func:`textured_fill` (random colour when ``None``)."""
    colour = random_colour(rng) if colour is None else colour
    return Sprite(mask, textured_fill(rng, mask.shape[0], mask.shape[1], colour))


def sample_side(rng: np.random.Generator, extent: int, scale: tuple[float, float]) -> int:
    """An object size drawn log-uniformly between ``scale[0] * extent`` and ``scale[1] * extent``."""
    low, high = np.log(scale[0] * extent), np.log(scale[1] * extent)
    return max(4, int(round(float(np.exp(rng.uniform(low, high))))))


# ----------------------------------------------------------------------------------- compositing


@dataclass
class Scene:
    """A finished image with its instances.

    Attributes:
        image: uint8 [H, W, 3] RGB.
        masks: bool [N, H, W], the visible pixels of each instance.
        labels: int64 [N], class indices into ``classes``.
        boxes: float32 [N, 4] xyxy (pixel-edge) of the visible masks.
        classes: class names.
    """

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    classes: tuple[str, ...]


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of masks, pixel-edge xyxy (max index + 1), like ``pycocotools.mask.toBbox``.

    Args:
        masks: bool [N, H, W], each non-empty.
    Returns:
        float32 [N, 4].
    """
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            raise ValueError(f"mask {i} is empty")
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


class Compositor:
    """Pastes sprites onto an image in paint order and keeps every instance's visible mask.

    Args:
        image: float32 [H, W, 3], painted in place.
        min_visible: smallest fraction of an instance's full area that must stay visible.
        min_pixels: smallest number of visible pixels an instance may keep.
    """

    def __init__(
        self, image: np.ndarray, *, min_visible: float = 0.2, min_pixels: int = 12
    ) -> None:
        self.image = image
        self.min_visible = min_visible
        self.min_pixels = min_pixels
        self.visible: list[np.ndarray] = []  # bool [H, W] each
        self.visible_count: list[int] = []
        self.full_area: list[int] = []
        self.labels: list[int] = []

    def place(self, sprite: Sprite, x0: int, y0: int, label: int | None) -> bool:
        """Paste ``sprite`` with its top-left corner at ``(x0, y0)`` (may hang over the border).

        ``label=None`` paints an occluder that is not an object. Returns False, and changes nothing,
        when the placement would leave this or any earlier instance too little visible.
        """
        height, width = self.image.shape[:2]
        sh, sw = sprite.shape
        ys, ye = max(y0, 0), min(y0 + sh, height)
        xs, xe = max(x0, 0), min(x0 + sw, width)
        if ye <= ys or xe <= xs:
            return False
        local = sprite.mask[ys - y0 : ye - y0, xs - x0 : xe - x0]
        if label is not None:
            area, shown = int(sprite.mask.sum()), int(local.sum())
            if shown < max(self.min_visible * area, self.min_pixels):
                return False
        overlaps = [int(np.count_nonzero(v[ys:ye, xs:xe] & local)) for v in self.visible]
        for i, overlap in enumerate(overlaps):
            left = self.visible_count[i] - overlap
            if overlap and left < max(self.min_visible * self.full_area[i], self.min_pixels):
                return False
        for i, overlap in enumerate(overlaps):
            if overlap:
                self.visible[i][ys:ye, xs:xe] &= ~local
                self.visible_count[i] -= overlap
        region = self.image[ys:ye, xs:xe]
        region[local] = sprite.rgb[ys - y0 : ye - y0, xs - x0 : xe - x0][local]
        if label is not None:
            full = np.zeros((height, width), bool)
            full[ys:ye, xs:xe] = local
            self.visible.append(full)
            self.visible_count.append(shown)
            self.full_area.append(area)
            self.labels.append(int(label))
        return True

    def scene(self, image: np.ndarray, classes: tuple[str, ...]) -> Scene:
        """The finished :class:`Scene` for the final (e.g. jittered) ``image``."""
        height, width = image.shape[:2]
        masks = np.stack(self.visible) if self.visible else np.zeros((0, height, width), bool)
        labels = np.asarray(self.labels, np.int64)
        return Scene(image, masks, labels, masks_to_boxes(masks), tuple(classes))


def add_clutter(
    rng: np.random.Generator,
    image: np.ndarray,
    count: int,
    *,
    scale: tuple[float, float] = (0.05, 0.4),
    compositor: Compositor | None = None,
) -> None:
    """Paint ``count`` non-objects (irregular blobs, scribbled lines) in object-like colours.

    With a ``compositor`` the clutter goes on top of the objects (occluding them, never below
    ``min_visible``); otherwise it is painted straight into ``image`` (background clutter).
    """
    height, width = image.shape[:2]
    for _ in range(count):
        side = sample_side(rng, min(height, width), scale)
        colour = random_colour(rng)
        if rng.random() < 0.6:
            mask = blob_mask(rng, side, int(side * rng.uniform(0.5, 1.5)) + 1)
        else:
            mask = np.zeros((side, side), np.uint8)
            pts = rng.uniform(0, side, size=(int(rng.integers(2, 5)), 2)).astype(np.int32)
            cv2.polylines(
                mask, [pts], False, 1, thickness=int(rng.integers(1, max(2, side // 10) + 1))
            )
            mask = mask.astype(bool)
        sprite = make_sprite(rng, mask, colour)
        y0 = int(rng.integers(-side // 4, height - side + side // 4 + 1))
        x0 = int(rng.integers(-side // 4, width - mask.shape[1] + side // 4 + 1))
        if compositor is not None:
            compositor.place(sprite, x0, y0, None)
        else:
            Compositor(image).place(sprite, x0, y0, None)


def photometric(
    rng: np.random.Generator, image: np.ndarray, *, strength: float = 1.0
) -> np.ndarray:
    """Light and camera jitter: contrast, brightness, white balance, uneven light, gamma, blur, noise.

    Args:
        image: float32 [H, W, 3] in 0..255.
        strength: scales every jitter (0 = none).
    Returns:
        uint8 [H, W, 3].
    """
    height, width = image.shape[:2]
    s = strength
    mean = np.asarray(cv2.mean(image)[:3])
    contrast = 1 + s * rng.uniform(-0.3, 0.3)
    gains = 1 + s * rng.uniform(-0.12, 0.12, size=3)
    offset = mean * (1 - contrast) + s * rng.uniform(-25, 25)
    # contrast, brightness and white balance in one affine map: out_c = gain_c * (k * in_c + b_c)
    matrix = np.concatenate([np.diag(gains * contrast), (gains * offset)[:, None]], axis=1)
    out = cv2.transform(image, matrix.astype(np.float32))
    light = smooth_noise(rng, height, width, cells=2, channels=1, octaves=1)[..., 0]  # [H, W]
    amount = s * rng.uniform(0, 0.5)
    light = 1 + np.float32(amount) * (light - np.float32(0.5))
    out = cv2.multiply(out, cv2.merge([light, light, light]))
    gamma = float(np.exp(s * rng.uniform(-0.2, 0.2)))
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    out = cv2.LUT(np.clip(out + np.float32(0.5), 0, 255).astype(np.uint8), lut)
    if rng.random() < 0.4 * s:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.3))
    noise_std = s * rng.uniform(0, 8)
    if noise_std > 0.5:
        out = np.clip(
            cv2.scaleAdd(_noise(rng, height, width), noise_std, out.astype(np.float32))
            + np.float32(0.5),
            0,
            255,
        ).astype(np.uint8)
    return out


@functools.cache
def _noise_table() -> np.ndarray:
    """Fixed standard-normal noise, float32 [640, 640, 3] (drawn once; cheaper than per image)."""
    return np.random.default_rng(2024).standard_normal((640, 640, 3), dtype=np.float32)


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Standard-normal noise [H, W, 3] float32: a random crop of the table, or fresh when larger."""
    table = _noise_table()
    if height > table.shape[0] or width > table.shape[1]:
        return rng.standard_normal((height, width, 3), dtype=np.float32)
    y0 = int(rng.integers(0, table.shape[0] - height + 1))
    x0 = int(rng.integers(0, table.shape[1] - width + 1))
    return np.ascontiguousarray(table[y0 : y0 + height, x0 : x0 + width])


def shapes_scene(
    rng: np.random.Generator,
    *,
    size: int = 256,
    num_objects: tuple[int, int] = (2, 7),
    scale: tuple[float, float] = (0.05, 0.6),
    min_visible: float = 0.2,
    classes: tuple[str, ...] = SHAPE_CLASSES,
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS,
    clutter: bool = True,
    jitter: float = 1.0,
) -> Scene:
    """A ``size`` x ``size`` scene of 2-7 shapes (classes from :data:`SHAPE_CLASSES`) over clutter.

    Colours are drawn independently of the class, so colour alone does not tell the class.
    ``backgrounds`` (kinds of :func:`make_background`), ``clutter`` and ``jitter`` (photometric
    strength) exist to make easy control scenes (e.g. ``("flat",)``, False, 0.0) for tests.
    """
    image = make_background(rng, size, size, kinds=backgrounds)
    if clutter:
        add_clutter(rng, image, int(rng.integers(1, 7)))
    comp = Compositor(image, min_visible=min_visible)
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        label = int(rng.integers(len(classes)))
        for _attempt in range(4):
            side = sample_side(rng, size, scale)
            sprite = make_sprite(rng, shape_mask(classes[label], rng, side))
            margin = side // 5  # objects may hang a little over the border
            y0 = int(rng.integers(-margin, size - side + margin + 1))
            x0 = int(rng.integers(-margin, size - side + margin + 1))
            if comp.place(sprite, x0, y0, label):
                break
    if clutter and rng.random() < 0.5:
        add_clutter(rng, image, int(rng.integers(1, 3)), scale=(0.03, 0.2), compositor=comp)
    return comp.scene(photometric(rng, comp.image, strength=jitter), classes)
