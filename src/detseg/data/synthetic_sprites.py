"""Articulated sprites: people, airplanes, faces, motorcycles, raccoons.

Each ``*_sprite`` function draws one object on its own canvas (a :class:`detseg.data.synthetic.Sprite`)
from a handful of parts (ellipses, thick lines, polygons) in their own colours, so that the outline
(the silhouette), not the colour, tells what it is. Sprites are cropped to their mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from detseg.data.synthetic import Sprite, textured_fill
from detseg.data.synthetic_textures import random_colour, smooth_noise

SKIN_HUE = (0.02, 0.1)


class _Canvas:
    """A sprite under construction: colours and mask drawn part by part, later parts on top."""

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.mask = np.zeros((height, width), np.uint8)

    def _draw(self, colour: np.ndarray, fn, *args) -> None:  # type: ignore[no-untyped-def]
        fn(self.rgb, *args, color=tuple(float(c) for c in colour))
        fn(self.mask, *args, color=1)

    def ellipse(self, colour: np.ndarray, centre, axes, angle: float = 0.0) -> None:  # type: ignore[no-untyped-def]
        c = (int(round(centre[0])), int(round(centre[1])))
        a = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
        self._draw(colour, lambda img, color: cv2.ellipse(img, c, a, angle, 0, 360, color, -1))

    def line(self, colour: np.ndarray, points, thickness: float) -> None:  # type: ignore[no-untyped-def]
        pts = np.round(np.asarray(points)).astype(np.int32)
        t = max(1, int(round(thickness)))
        self._draw(colour, lambda img, color: cv2.polylines(img, [pts], False, color, t))

    def polygon(self, colour: np.ndarray, points) -> None:  # type: ignore[no-untyped-def]
        pts = np.round(np.asarray(points)).astype(np.int32)
        self._draw(colour, lambda img, color: cv2.fillPoly(img, [pts], color))

    def finish(self, rng: np.random.Generator, *, flip: bool = False, fur: float = 0.0) -> Sprite:
        """Add shading (and fur-like noise when ``fur`` > 0), crop to the mask, maybe mirror."""
        h, w = self.mask.shape
        shade = textured_fill(rng, h, w, np.full(3, 1.0, np.float32))
        if fur > 0:
            grain = smooth_noise(rng, h, w, cells=max(4, w // 3), channels=1, octaves=1)
            shade = shade * (1 - fur + 2 * fur * grain)
        rgb, mask = self.rgb * shade, self.mask.astype(bool)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        rgb = rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        mask = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if flip:
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        return Sprite(np.ascontiguousarray(mask), np.ascontiguousarray(rgb))


def _skin(rng: np.random.Generator) -> np.ndarray:
    return random_colour(rng, hue=SKIN_HUE, saturation=(0.25, 0.6), value=(0.3, 0.95))


def person_sprite(rng: np.random.Generator, height: int) -> Sprite:
    """An upright walking person about ``height`` pixels tall (head, hair, torso, arms, legs, shoes)."""
    h = float(height)
    canvas = _Canvas(height + 2, int(h * 0.6) + 2)
    cx = canvas.mask.shape[1] / 2
    shirt, trousers = random_colour(rng), random_colour(rng, value=(0.1, 0.8))
    skin, hair = _skin(rng), random_colour(rng, saturation=(0.2, 0.7), value=(0.05, 0.5))
    shoulder_y, hip_y, foot_y = 0.19 * h, 0.52 * h, 0.985 * h
    shoulder_w, hip_w = h * rng.uniform(0.09, 0.12), h * rng.uniform(0.06, 0.085)
    stride = rng.uniform(0.0, 0.3)  # walking: legs apart by this angle (radians)
    leg_t = h * rng.uniform(0.06, 0.08)
    for side, swing in ((-1, -stride), (1, stride)):
        hip = (cx + side * hip_w * 0.6, hip_y)
        knee = (hip[0] + np.sin(swing) * 0.24 * h, hip_y + np.cos(swing) * 0.23 * h)
        foot = (knee[0] + np.sin(swing * 0.7) * 0.23 * h, foot_y - leg_t / 2)
        canvas.line(trousers, [hip, knee, foot], leg_t)
        canvas.line(
            random_colour(rng, value=(0.05, 0.4)),
            [foot, (foot[0] + side * leg_t * 0.6, foot[1])],
            leg_t * 0.8,
        )
    coat = rng.random() < 0.35  # a coat or dress reaching below the hips
    bottom = hip_y + (rng.uniform(0.08, 0.2) * h if coat else 0.02 * h)
    flare = hip_w * (1.5 if coat else 1.05)
    canvas.polygon(
        shirt,
        [
            (cx - shoulder_w, shoulder_y),
            (cx + shoulder_w, shoulder_y),
            (cx + flare, bottom),
            (cx - flare, bottom),
        ],
    )
    arm_t = h * rng.uniform(0.045, 0.06)
    for side in (-1, 1):
        swing = rng.uniform(-0.45, 0.45)
        shoulder = (cx + side * (shoulder_w - arm_t / 2), shoulder_y + arm_t / 2)
        elbow = (
            shoulder[0] + side * 0.03 * h + np.sin(swing) * 0.16 * h,
            shoulder[1] + np.cos(swing) * 0.16 * h,
        )
        hand = (
            elbow[0] + np.sin(swing * 1.3) * 0.15 * h,
            elbow[1] + np.cos(swing * 1.3) * 0.15 * h,
        )
        canvas.line(shirt, [shoulder, elbow, hand], arm_t)
        canvas.ellipse(skin, hand, (arm_t * 0.55, arm_t * 0.65))
    canvas.line(skin, [(cx, shoulder_y - 0.05 * h), (cx, shoulder_y + 0.01 * h)], 0.05 * h)
    head_r = h * rng.uniform(0.058, 0.07)
    canvas.ellipse(skin, (cx, shoulder_y - 0.045 * h - head_r * 0.85), (head_r * 0.85, head_r))
    canvas.ellipse(hair, (cx, shoulder_y - 0.05 * h - head_r * 1.2), (head_r * 0.9, head_r * 0.65))
    if rng.random() < 0.3:  # a bag on one shoulder
        side = 1 if rng.random() < 0.5 else -1
        bag = (cx + side * (shoulder_w + 0.04 * h), hip_y - 0.05 * h)
        canvas.ellipse(random_colour(rng), bag, (0.05 * h, 0.07 * h))
    return canvas.finish(rng, flip=bool(rng.random() < 0.5))


def airplane_sprite(rng: np.random.Generator, length: int) -> Sprite:
    """A side view of an airliner ``length`` pixels long: fuselage, swept wing, fin, stabiliser, windows."""
    L = float(length)
    canvas = _Canvas(int(L * 0.5) + 2, length + 2)
    body = random_colour(rng, saturation=(0.0, 0.25), value=(0.55, 1.0))
    trim = random_colour(rng)
    cy = 0.3 * L
    half = L * rng.uniform(0.045, 0.06)
    canvas.polygon(
        body,
        [
            (0.04 * L, cy),
            (0.1 * L, cy - half),
            (0.85 * L, cy - half),
            (0.99 * L, cy - half * 2.2),
            (0.99 * L, cy - half * 0.5),
            (0.9 * L, cy + half),
            (0.1 * L, cy + half),
        ],
    )
    canvas.ellipse(body, (0.1 * L, cy), (0.07 * L, half))
    sweep = rng.uniform(0.1, 0.2) * L
    canvas.polygon(
        trim,
        [
            (0.86 * L, cy - half),
            (0.99 * L, cy - half * 2.2),
            (0.99 * L, 0.04 * L),
            (0.93 * L, 0.04 * L),
        ],
    )
    canvas.polygon(
        body * 0.85,
        [
            (0.38 * L, cy + half * 0.3),
            (0.55 * L, cy + half * 0.3),
            (0.55 * L + sweep, cy + 0.2 * L),
            (0.47 * L + sweep, cy + 0.2 * L),
        ],
    )
    canvas.polygon(
        body * 0.85,
        [(0.86 * L, cy), (0.95 * L, cy), (0.99 * L, cy + 0.06 * L), (0.94 * L, cy + 0.06 * L)],
    )
    canvas.ellipse(
        random_colour(rng, saturation=(0, 0.2), value=(0.3, 0.7)),
        (0.5 * L, cy + half * 1.6),
        (0.06 * L, half * 0.7),
    )
    windows = np.linspace(0.16 * L, 0.82 * L, 14)
    canvas.line(
        trim * 0.6,
        [(windows[0], cy - half * 0.3), (windows[-1], cy - half * 0.3)],
        max(1.0, half * 0.3),
    )
    return canvas.finish(rng, flip=bool(rng.random() < 0.5))


def face_sprite(rng: np.random.Generator, height: int) -> Sprite:
    """A frontal face ``height`` pixels tall: hair, ears, skin oval, brows, eyes, nose, mouth."""
    h = float(height)
    canvas = _Canvas(height + 2, int(h * 0.9) + 2)
    cx, cy = canvas.mask.shape[1] / 2, h * 0.55
    skin, hair = _skin(rng), random_colour(rng, saturation=(0.2, 0.8), value=(0.05, 0.6))
    fw, fh = h * rng.uniform(0.3, 0.36), h * 0.44
    canvas.ellipse(hair, (cx, cy - fh * 0.25), (fw * 1.12, fh * rng.uniform(0.8, 0.95)))
    for side in (-1, 1):
        canvas.ellipse(skin * 0.9, (cx + side * fw * 0.98, cy), (fw * 0.14, fh * 0.18))
    canvas.ellipse(skin, (cx, cy + fh * 0.05), (fw, fh * 0.92))
    canvas.ellipse(hair, (cx, cy - fh * 0.75), (fw * 0.95, fh * 0.3))
    eye_y = cy - fh * 0.1
    for side in (-1, 1):
        ex = cx + side * fw * 0.42
        canvas.line(
            hair,
            [(ex - fw * 0.2, eye_y - fh * 0.17), (ex + fw * 0.2, eye_y - fh * 0.19)],
            fh * 0.05,
        )
        canvas.ellipse(np.array([235.0, 235.0, 230.0]), (ex, eye_y), (fw * 0.18, fh * 0.07))
        canvas.ellipse(random_colour(rng, value=(0.1, 0.5)), (ex, eye_y), (fw * 0.08, fh * 0.065))
    canvas.line(
        skin * 0.75,
        [
            (cx, eye_y + fh * 0.05),
            (cx - fw * 0.08, cy + fh * 0.3),
            (cx + fw * 0.05, cy + fh * 0.32),
        ],
        fh * 0.04,
    )
    canvas.ellipse(
        random_colour(rng, hue=(0.95, 1.02), saturation=(0.4, 0.8), value=(0.4, 0.8)),
        (cx, cy + fh * 0.55),
        (fw * 0.35, fh * rng.uniform(0.04, 0.1)),
    )
    return canvas.finish(rng)


def motorcycle_sprite(rng: np.random.Generator, length: int) -> Sprite:
    """A side view of a motorcycle ``length`` pixels long: two wheels, frame, tank, seat, fork, bars."""
    L = float(length)
    canvas = _Canvas(int(L * 0.65) + 2, length + 2)
    paint = random_colour(rng, saturation=(0.3, 1.0))
    tyre, metal = (
        np.array([25.0, 25.0, 28.0]),
        random_colour(rng, saturation=(0, 0.1), value=(0.5, 0.85)),
    )
    wheel_r = L * rng.uniform(0.17, 0.2)
    ground = canvas.mask.shape[0] - 1 - wheel_r
    rear, front = (wheel_r + 1, ground), (L - wheel_r, ground)
    for centre in (rear, front):
        canvas.ellipse(tyre, centre, (wheel_r, wheel_r))
        canvas.ellipse(metal, centre, (wheel_r * 0.55, wheel_r * 0.55))
        canvas.ellipse(tyre * 2, centre, (wheel_r * 0.2, wheel_r * 0.2))
    top = ground - L * 0.32
    canvas.polygon(
        metal * 0.8,
        [
            (0.35 * L, ground - 0.05 * L),
            (0.6 * L, ground - 0.05 * L),
            (0.62 * L, top + 0.1 * L),
            (0.33 * L, top + 0.1 * L),
        ],
    )
    canvas.line(metal, [rear, (0.5 * L, top + 0.12 * L)], L * 0.03)
    canvas.line(metal, [(0.2 * L, ground - 0.02 * L), (0.5 * L, ground - 0.03 * L)], L * 0.035)
    canvas.ellipse(
        paint, (0.55 * L, top + 0.03 * L), (0.13 * L, 0.06 * L), angle=float(rng.uniform(-8, 3))
    )
    canvas.polygon(
        tyre * 1.5,
        [
            (0.2 * L, top + 0.02 * L),
            (0.45 * L, top + 0.01 * L),
            (0.43 * L, top + 0.06 * L),
            (0.22 * L, top + 0.08 * L),
        ],
    )
    canvas.polygon(
        paint,
        [
            (0.05 * L, top + 0.05 * L),
            (0.25 * L, top + 0.03 * L),
            (0.22 * L, top + 0.1 * L),
            (0.07 * L, top + 0.12 * L),
        ],
    )
    bar = (0.74 * L, top - 0.06 * L)
    canvas.line(metal, [front, bar], L * 0.035)
    canvas.line(tyre, [bar, (bar[0] - 0.06 * L, bar[1] - 0.03 * L)], L * 0.025)
    canvas.ellipse(
        random_colour(rng, value=(0.8, 1.0), saturation=(0, 0.3)),
        (bar[0] + 0.03 * L, bar[1] + 0.06 * L),
        (0.03 * L, 0.035 * L),
    )
    return canvas.finish(rng, flip=bool(rng.random() < 0.5))


def raccoon_sprite(rng: np.random.Generator, length: int) -> Sprite:
    """A raccoon ``length`` pixels long: furry body, masked face, ears, legs, and a ringed tail."""
    L = float(length)
    canvas = _Canvas(int(L * 0.7) + 2, length + 2)
    fur = random_colour(rng, hue=(0.05, 0.12), saturation=(0.05, 0.35), value=(0.35, 0.7))
    dark, light = np.array([30.0, 28.0, 30.0]), np.array([225.0, 222.0, 215.0])
    ground = canvas.mask.shape[0] - 2
    body_c = (0.5 * L, ground - 0.3 * L)
    for leg_x in (0.33, 0.43, 0.58, 0.66):
        canvas.line(
            dark * 1.5,
            [(leg_x * L, body_c[1]), (leg_x * L + rng.uniform(-0.03, 0.03) * L, ground - 0.02 * L)],
            0.06 * L,
        )
    tail = np.array([(0.22 * L, body_c[1] - 0.02 * L)])
    bend = rng.uniform(-0.6, 0.6)
    for k in range(1, 8):  # a curved tail drawn band by band
        angle = np.pi + bend * k / 7 - 0.3
        tail = np.vstack(
            [tail, tail[-1] + 0.03 * L * np.array([np.cos(angle), np.sin(angle) - 0.2])]
        )
    for k in range(len(tail) - 1):
        canvas.line(dark if k % 2 else fur * 1.25, tail[k : k + 2], 0.09 * L * (1 - 0.05 * k))
    canvas.ellipse(fur, body_c, (0.24 * L, 0.16 * L), angle=float(rng.uniform(-10, 10)))
    head = (0.8 * L, body_c[1] - 0.08 * L)
    for dx in (-0.06, 0.05):
        canvas.polygon(
            dark,
            [
                (head[0] + dx * L, head[1] - 0.16 * L),
                (head[0] + (dx - 0.04) * L, head[1] - 0.06 * L),
                (head[0] + (dx + 0.05) * L, head[1] - 0.07 * L),
            ],
        )
    canvas.ellipse(light, head, (0.11 * L, 0.1 * L))
    canvas.ellipse(dark, (head[0] + 0.01 * L, head[1] - 0.01 * L), (0.1 * L, 0.035 * L))
    canvas.ellipse(light, (head[0] + 0.11 * L, head[1] + 0.04 * L), (0.05 * L, 0.035 * L))
    canvas.ellipse(dark, (head[0] + 0.155 * L, head[1] + 0.035 * L), (0.015 * L, 0.015 * L))
    return canvas.finish(rng, flip=bool(rng.random() < 0.5), fur=0.25)
