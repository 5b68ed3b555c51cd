"""Synthetic semantic segmentation scenes: seismic salt sections, city streets, roads ahead.

Each function returns ``(image uint8, mask int64 [H, W])`` where the mask holds class indices into
the module's class tuple. Images and masks are drawn together (every painted region writes its
class into the mask), so the labels are exact.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from detseg.data.synthetic import Sprite, photometric, textured_fill
from detseg.data.synthetic_sprites import person_sprite
from detseg.data.synthetic_textures import random_colour, smooth_noise

SALT_SIZE = 101
STREET_CLASSES = ("road", "sidewalk", "building", "sky", "vegetation", "car", "person")
ROAD_CLASSES = ("not_road", "road")


# ----------------------------------------------------------------------------------- salt


def _ricker_trace(rng: np.random.Generator, length: int, period: float) -> np.ndarray:
    """A seismic trace: sparse random reflectivity convolved with a Ricker wavelet. float32 [length]."""
    reflectivity = rng.standard_normal(length) * (rng.random(length) < 0.35)
    t = np.arange(-3 * period, 3 * period + 1) / period
    wavelet = (1 - 2 * (np.pi * t / 2) ** 2) * np.exp(-((np.pi * t / 2) ** 2))
    trace = np.convolve(reflectivity, wavelet, mode="same")
    return (trace / (np.abs(trace).max() + 1e-6)).astype(np.float32)


def salt_section(
    rng: np.random.Generator, *, size: int = SALT_SIZE, empty_fraction: float = 0.4
) -> tuple[np.ndarray, np.ndarray, int]:
    """A grey seismic section of folded layered reflectors, with a salt body in ``1 - empty_fraction``.

    Outside the salt the reflectors are continuous and folded (and dragged up along the salt flank);
    inside, the texture is chaotic (incoherent, dimmer reflections). Mean brightness is the same
    on both sides, so a brightness threshold does not find the salt; the texture does.

    Returns:
        image uint8 [size, size] (grey), mask int64 [size, size] in {0, 1}, depth in feet (int).
    """
    has_salt = rng.random() >= empty_fraction
    mask = np.zeros((size, size), np.uint8)
    if has_salt:
        field = smooth_noise(rng, size, size, cells=2, channels=1, octaves=2)[..., 0]
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:size, 0:size] / size
        field += rng.uniform(0, 0.6) * (np.cos(angle) * xs + np.sin(angle) * ys)
        coverage = rng.uniform(0.05, 0.9) if rng.random() < 0.9 else 1.0
        mask = (field >= np.quantile(field, 1 - coverage)).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    # folded layers: the depth coordinate is bent by long waves and by drag along the salt flank
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    tilt = rng.uniform(-0.4, 0.4)
    fold = sum(
        rng.uniform(1, 8) * np.sin(2 * np.pi * xs / rng.uniform(40, 200) + rng.uniform(0, 6.3))
        for _ in range(2)
    )
    warp = 12 * (smooth_noise(rng, size, size, cells=3, channels=1, octaves=1)[..., 0] - 0.5)
    depth = ys + tilt * xs + fold + warp
    if has_salt and mask.any():
        distance = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5)
        depth += rng.uniform(4, 14) * np.exp(-distance / rng.uniform(5, 15))
    period = rng.uniform(2.0, 4.0)
    trace = _ricker_trace(rng, 4 * size, period)
    layered = np.interp(depth.ravel() + size, np.arange(len(trace)), trace).reshape(size, size)
    # chaotic inside: fine isotropic noise with short, broken reflections
    chaos = smooth_noise(rng, size, size, cells=int(rng.integers(18, 30)), channels=1, octaves=2)[
        ..., 0
    ]
    chaos = (chaos - chaos.mean()) / (chaos.std() + 1e-6) * 0.25
    image = np.where(mask > 0, chaos * rng.uniform(0.5, 0.9), layered).astype(np.float32)
    if has_salt and mask.any() and rng.random() < 0.6:  # bright reflector on the salt boundary
        edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        image[edge] += rng.choice([-1, 1]) * rng.uniform(0.3, 0.6)
    image += rng.normal(0, rng.uniform(0.05, 0.15), image.shape).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.9))
    grey = 128 + image * rng.uniform(35, 70) + rng.uniform(-15, 15)
    image_u8 = np.clip(grey + 0.5, 0, 255).astype(np.uint8)
    depth_ft = int(rng.integers(51, 960))
    return image_u8, mask.astype(np.int64), depth_ft


# ----------------------------------------------------------------------------------- painter


class _Painter:
    """An image and its label map, painted region by region."""

    def __init__(self, height: int, width: int) -> None:
        self.image = np.zeros((height, width, 3), np.float32)
        self.labels = np.zeros((height, width), np.int64)

    def fill(self, region: np.ndarray, colours: np.ndarray, label: int) -> None:
        """``region`` bool [H, W]; ``colours`` float32 [H, W, 3] or [3]."""
        np.copyto(self.image, colours, where=region[..., None])
        np.copyto(self.labels, label, where=region)

    def fill_drawn(
        self, region: np.ndarray, colours: Callable[[int, int], np.ndarray], label: int
    ) -> None:
        """Paint ``region`` (uint8 [H, W], non-zero inside) with ``colours(h, w)`` of its bounding box."""
        x, y, w, h = cv2.boundingRect(region)
        if w == 0 or h == 0:
            return
        inside = region[y : y + h, x : x + w] > 0
        np.copyto(self.image[y : y + h, x : x + w], colours(h, w), where=inside[..., None])
        self.labels[y : y + h, x : x + w][inside] = label

    def polygon(
        self,
        rng: np.random.Generator,
        points: list[tuple[float, float]],
        colour: np.ndarray,
        label: int,
    ) -> None:
        """A textured polygon; ``points`` as (x, y) pixels."""
        region = np.zeros(self.labels.shape, np.uint8)
        cv2.fillPoly(region, [np.round(np.asarray(points)).astype(np.int32)], 1)
        self.fill_drawn(region, lambda h, w: textured_fill(rng, h, w, colour), label)

    def sprite(self, sprite: Sprite, x0: int, y0: int, label: int) -> None:
        """Paste a sprite with its top-left corner at (x0, y0)."""
        h, w = self.labels.shape
        sh, sw = sprite.shape
        ys, ye, xs, xe = max(y0, 0), min(y0 + sh, h), max(x0, 0), min(x0 + sw, w)
        if ye <= ys or xe <= xs:
            return
        local = sprite.mask[ys - y0 : ye - y0, xs - x0 : xe - x0]
        self.image[ys:ye, xs:xe][local] = sprite.rgb[ys - y0 : ye - y0, xs - x0 : xe - x0][local]
        self.labels[ys:ye, xs:xe][local] = label

    def tree(
        self, rng: np.random.Generator, x: float, base: float, height: float, label: int
    ) -> None:
        trunk = random_colour(rng, hue=(0.05, 0.1), saturation=(0.3, 0.6), value=(0.2, 0.4))
        w = max(2.0, height * 0.06)
        self.polygon(
            rng,
            [
                (x - w, base),
                (x + w, base),
                (x + w, base - height * 0.6),
                (x - w, base - height * 0.6),
            ],
            trunk,
            label,
        )
        crown = np.zeros(self.labels.shape, np.uint8)
        for _ in range(5):
            cx = x + rng.uniform(-0.25, 0.25) * height
            cy = base - height * rng.uniform(0.6, 0.95)
            r = int(max(2, height * rng.uniform(0.15, 0.3)))
            cv2.circle(crown, (int(cx), int(cy)), r, 1, -1)
        leaves = random_colour(rng, hue=(0.2, 0.38), saturation=(0.4, 0.8), value=(0.25, 0.6))
        self.fill_drawn(
            crown,
            lambda h, w: leaves * (0.6 + 0.8 * smooth_noise(rng, h, w, cells=max(2, w // 8))),
            label,
        )

    def car(
        self, rng: np.random.Generator, x: float, bottom: float, width: float, label: int
    ) -> None:
        body = random_colour(rng)
        height = width * rng.uniform(0.55, 0.75)
        self.polygon(
            rng,
            [
                (x, bottom - height * 0.15),
                (x + width, bottom - height * 0.15),
                (x + width, bottom - height * 0.55),
                (x, bottom - height * 0.55),
            ],
            body,
            label,
        )
        self.polygon(
            rng,
            [
                (x + width * 0.15, bottom - height * 0.55),
                (x + width * 0.85, bottom - height * 0.55),
                (x + width * 0.75, bottom - height),
                (x + width * 0.25, bottom - height),
            ],
            body * 0.9,
            label,
        )
        glass = random_colour(rng, saturation=(0, 0.2), value=(0.1, 0.35))
        self.polygon(
            rng,
            [
                (x + width * 0.22, bottom - height * 0.6),
                (x + width * 0.78, bottom - height * 0.6),
                (x + width * 0.7, bottom - height * 0.92),
                (x + width * 0.3, bottom - height * 0.92),
            ],
            glass,
            label,
        )
        wheels = np.zeros(self.labels.shape, np.uint8)
        for wx in (x + width * 0.2, x + width * 0.8):
            cv2.circle(
                wheels, (int(wx), int(bottom - height * 0.15)), int(max(1, height * 0.15)), 1, -1
            )
        self.fill(wheels > 0, np.array([20.0, 20.0, 22.0], np.float32), label)


# ----------------------------------------------------------------------------------- street


def street_scene(rng: np.random.Generator, *, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A street in one-point perspective with the seven :data:`STREET_CLASSES`.

    Returns:
        image uint8 [size, size, 3], mask int64 [size, size] of indices into STREET_CLASSES.
    """
    road, sidewalk, building, sky, vegetation, car, person = range(7)
    paint = _Painter(size, size)
    vx, vy = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.35, 0.5)
    ys = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    sky_colour = random_colour(rng, hue=(0.55, 0.62), saturation=(0.1, 0.5), value=(0.6, 1.0))
    paint.fill(
        np.ones((size, size), bool),
        np.broadcast_to(sky_colour * (1.1 - 0.3 * ys), (size, size, 3)),
        sky,
    )
    for side in (-1, 1):  # facades converge to the vanishing point
        roof_near = size * rng.uniform(-0.1, 0.25)
        edge_x = -size if side < 0 else 2 * size
        far_x = vx + side * size * rng.uniform(0.04, 0.12)
        top_far = vy - rng.uniform(0.05, 0.2) * size
        wall = random_colour(rng, saturation=(0, 0.35), value=(0.3, 0.8))
        paint.polygon(
            rng,
            [(far_x, top_far), (edge_x, roof_near), (edge_x, size * 1.5), (far_x, vy + 2)],
            wall,
            building,
        )
        for k in range(int(rng.integers(3, 7))):  # window rows follow the perspective
            t = (k + 1) / 8
            y_far, y_near = top_far + t * (vy - top_far), roof_near + t * (size * 1.5 - roof_near)
            paint.polygon(
                rng,
                [
                    (far_x, y_far),
                    (edge_x, y_near),
                    (edge_x, y_near + 0.03 * size + 0.1 * abs(y_near - y_far)),
                    (far_x, y_far + 1),
                ],
                wall * 0.45,
                building,
            )
    for _ in range(int(rng.integers(0, 4))):
        side = rng.choice([-1, 1])
        x = vx + side * size * rng.uniform(0.15, 0.5)
        paint.tree(
            rng, x, vy + size * rng.uniform(0.05, 0.25), size * rng.uniform(0.2, 0.45), vegetation
        )
    half_road = size * rng.uniform(0.5, 1.0)
    walk = size * rng.uniform(0.25, 0.6)
    walk_colour = random_colour(rng, saturation=(0, 0.2), value=(0.5, 0.85))
    for side in (-1, 1):
        paint.polygon(
            rng,
            [(vx, vy), (vx + side * half_road, size), (vx + side * (half_road + walk), size)],
            walk_colour,
            sidewalk,
        )
    asphalt = random_colour(rng, hue=(0.6, 0.85), saturation=(0, 0.2), value=(0.25, 0.5))
    paint.polygon(rng, [(vx, vy), (vx - half_road, size), (vx + half_road, size)], asphalt, road)
    grain = smooth_noise(rng, size, size, cells=32, channels=1, octaves=1)
    paint.image *= np.where(paint.labels[..., None] <= sidewalk, 0.9 + 0.2 * grain, 1.0)
    for k in range(6):  # dashed centre line (road)
        t0, t1 = (k + 0.3) / 6, (k + 0.6) / 6
        y0, y1 = vy + (size - vy) * t0**2, vy + (size - vy) * t1**2
        dash = [
            (vx - 1 - 3 * t0, y0),
            (vx + 1 + 3 * t0, y0),
            (vx + 1 + 3 * t1, y1),
            (vx - 1 - 3 * t1, y1),
        ]
        paint.polygon(rng, dash, np.array([235.0, 235.0, 225.0], np.float32), road)
    actors = []
    for _ in range(int(rng.integers(0, 4))):
        t = rng.uniform(0.15, 1.0)  # depth: 0 at the horizon, 1 at the bottom
        actors.append((t, "car", vx + rng.uniform(-0.8, 0.5) * half_road * t))
    for _ in range(int(rng.integers(0, 4))):
        t = rng.uniform(0.15, 1.0)
        side = rng.choice([-1, 1])
        actors.append((t, "person", vx + side * (half_road + walk * rng.uniform(0.2, 0.8)) * t))
    for t, kind, x in sorted(actors):  # far ones first
        bottom = vy + (size - vy) * t
        if kind == "car":
            paint.car(rng, x, bottom, size * 0.45 * t, car)
        else:
            sprite = person_sprite(rng, max(8, int(size * 0.45 * t)))
            paint.sprite(
                sprite, int(x - sprite.shape[1] / 2), int(bottom - sprite.shape[0]), person
            )
    return photometric(rng, paint.image, strength=0.6), paint.labels


# ----------------------------------------------------------------------------------- road


def road_scene(
    rng: np.random.Generator, *, height: int = 160, width: int = 480, marked: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """A road ahead seen from a car (KITTI road style), possibly curving, with shadows and cars.

    Args:
        marked: lane markings: 0 none (KITTI ``uu``), 1 edge lines (``um``), 2 several lanes (``umm``).
    Returns:
        image uint8 [height, width, 3], mask int64 [H, W]: 1 = road, 0 = everything else.
    """
    paint = _Painter(height, width)
    horizon = height * rng.uniform(0.35, 0.5)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    near = np.clip((ys - horizon) / (height - horizon), 0, 1)  # 0 at the horizon, 1 at the bottom
    sky = random_colour(rng, hue=(0.55, 0.62), saturation=(0, 0.4), value=(0.7, 1.0))
    paint.fill(np.ones((height, width), bool), np.broadcast_to(sky, (height, width, 3)), 0)
    for _ in range(int(rng.integers(2, 6))):  # buildings / hedges behind the verge
        x0 = rng.uniform(-0.1, 1.0) * width
        bw, bh = width * rng.uniform(0.1, 0.35), height * rng.uniform(0.1, 0.35)
        colour = random_colour(rng, saturation=(0, 0.5), value=(0.2, 0.8))
        paint.polygon(
            rng,
            [
                (x0, horizon + 2),
                (x0 + bw, horizon + 2),
                (x0 + bw, horizon - bh),
                (x0, horizon - bh),
            ],
            colour,
            0,
        )
    verge = random_colour(rng, hue=(0.08, 0.35), saturation=(0.1, 0.6), value=(0.25, 0.65))
    below = np.broadcast_to(ys >= horizon, (height, width))
    paint.fill(below, textured_fill(rng, height, width, verge), 0)
    centre = width * rng.uniform(0.35, 0.65) + rng.uniform(-0.3, 0.3) * width * (1 - near) ** 2
    half = np.maximum(near * width * rng.uniform(0.3, 0.6), 0.5)
    road = (np.abs(xs - centre) < half) & (ys >= horizon)
    asphalt = random_colour(rng, hue=(0.55, 0.75), saturation=(0, 0.15), value=(0.3, 0.55))
    grain = smooth_noise(rng, height, width, cells=40, channels=1, octaves=1)
    paint.fill(road, textured_fill(rng, height, width, asphalt) * (0.9 + 0.2 * grain), 1)
    line = np.array([230.0, 230.0, 220.0], np.float32)
    line_w = np.maximum(near * width * 0.012, 0.6)
    offsets = {0: [], 1: [-0.9, 0.9], 2: [-0.9, -0.3, 0.3, 0.9]}[marked]
    for offset in offsets:
        stripe = (np.abs(xs - (centre + offset * half)) < line_w) & road
        if abs(offset) < 0.5:  # inner lanes are dashed
            stripe &= np.sin(np.sqrt(near) * 40 + rng.uniform(0, 6.3)) > 0
        paint.fill(stripe, line, 1)
    for _ in range(int(rng.integers(0, 3))):  # parked / oncoming cars cover the road: non-road
        t = rng.uniform(0.2, 0.9)
        row = int(horizon + t * (height - horizon))
        x = float(centre[row, 0] + rng.choice([-1, 1]) * half[row, 0] * rng.uniform(0.6, 1.1))
        paint.car(rng, x - width * 0.08 * t, row, width * 0.16 * t, 0)
    for _ in range(int(rng.integers(0, 4))):  # trees on the verge
        side = rng.choice([-1, 1])
        t = rng.uniform(0.05, 0.6)
        row = int(horizon + t * (height - horizon))
        x = float(centre[row, 0] + side * half[row, 0] * rng.uniform(1.3, 2.5))
        paint.tree(rng, x, row, height * (0.2 + 0.8 * t), 0)
    shadow = smooth_noise(rng, height, width, cells=6, channels=1, octaves=2)  # [H, W, 1]
    shadow = (shadow > rng.uniform(0.45, 0.75)) & (ys >= horizon)[..., None]
    paint.image *= np.where(shadow, np.float32(rng.uniform(0.4, 0.7)), np.float32(1.0))
    return photometric(rng, paint.image, strength=0.6), paint.labels
