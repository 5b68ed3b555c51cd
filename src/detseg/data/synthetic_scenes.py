"""Detection scenes built from sprites: pedestrians, single objects, raccoons, moving-object video.

Scene functions place sprites with the :class:`~detseg.data.synthetic.Compositor`, which keeps the
exact visible mask of every instance, and return a :class:`~detseg.data.synthetic.Scene`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from detseg.data.synthetic import (
    SHAPE_CLASSES,
    Compositor,
    Scene,
    Sprite,
    add_clutter,
    make_sprite,
    masks_to_boxes,
    photometric,
    shape_mask,
    textured_fill,
)
from detseg.data.synthetic_sprites import (
    airplane_sprite,
    face_sprite,
    motorcycle_sprite,
    person_sprite,
    raccoon_sprite,
)
from detseg.data.synthetic_textures import make_background, random_colour, smooth_noise

SINGLE_OBJECT_CLASSES = ("airplane", "face", "motorcycle")
SINGLE_OBJECT_SPRITES = {
    "airplane": airplane_sprite,
    "face": face_sprite,
    "motorcycle": motorcycle_sprite,
}


def _place_inside(rng: np.random.Generator, comp: Compositor, sprite: Sprite, label: int) -> bool:
    """Place ``sprite`` at a random position where it lies wholly inside the image."""
    height, width = comp.image.shape[:2]
    sh, sw = sprite.shape
    if sh > height or sw > width:
        return False
    y0, x0 = int(rng.integers(0, height - sh + 1)), int(rng.integers(0, width - sw + 1))
    return comp.place(sprite, x0, y0, label)


def street_background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, int]:
    """Sky, a row of buildings with windows and a paved ground. Returns (float32 [H, W, 3], horizon y)."""
    horizon = int(height * rng.uniform(0.4, 0.6))
    sky_top, sky_low = (
        random_colour(rng, hue=(0.55, 0.65), saturation=(0.1, 0.6), value=(0.6, 1.0)),
        random_colour(rng, saturation=(0, 0.2), value=(0.7, 1.0)),
    )
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = np.repeat(sky_top + (sky_low - sky_top) * ys, width, axis=1)
    x = 0
    while x < width:  # buildings
        bw = int(rng.integers(width // 8, width // 3))
        top = int(rng.integers(0, max(1, horizon - height // 8)))
        wall = random_colour(rng, saturation=(0, 0.4), value=(0.3, 0.85))
        block = textured_fill(rng, horizon - top, bw, wall)
        step_y, step_x = int(rng.integers(10, 22)), int(rng.integers(10, 22))
        glass = random_colour(rng, saturation=(0, 0.3), value=(0.1, 0.5))
        for wy in range(4, max(4, block.shape[0] - 8), step_y):
            for wx in range(3, max(3, bw - 6), step_x):
                block[wy : wy + step_y // 2, wx : wx + step_x // 2] = glass
        image[top:horizon, x : x + bw] = block[:, : width - x]
        x += bw
    ground = textured_fill(
        rng, height - horizon, width, random_colour(rng, saturation=(0, 0.15), value=(0.3, 0.7))
    )
    grain = smooth_noise(rng, height - horizon, width, cells=16, channels=1, octaves=2)
    image[horizon:] = ground * (0.85 + 0.3 * grain)
    return image, horizon


def pedestrian_scene(rng: np.random.Generator, *, height: int = 256, width: int = 320) -> Scene:
    """A street with 1-4 people standing on the ground, sized by their distance (feet lower = taller).

    People are painted far to near (feet from high to low in the image), so a nearer person hides
    a farther one and never the reverse, as in a photo; a position that would hide an earlier
    person below the compositor's ``min_visible`` is tried again elsewhere (up to 10 times).
    """
    image, horizon = street_background(rng, height, width)
    add_clutter(rng, image, int(rng.integers(1, 5)), scale=(0.05, 0.3))
    comp = Compositor(image, min_visible=0.3)
    people = []
    for _ in range(1 + int(rng.binomial(3, 0.4))):  # 2.2 people per image (Penn-Fudan: 2.0)
        feet = rng.uniform(horizon + 0.45 * (height - horizon), height - 1)
        person_h = int(np.clip((feet - horizon) * rng.uniform(1.6, 2.3), 0.3 * height, 0.95 * feet))
        people.append((feet, person_sprite(rng, person_h)))
    people.sort(key=lambda person: person[0])  # farthest first
    for feet, sprite in people:
        for _attempt in range(10):
            y0, x0 = int(feet) - sprite.shape[0], int(rng.integers(0, width - sprite.shape[1] + 1))
            if comp.place(sprite, x0, y0, 0):
                break
    return comp.scene(photometric(rng, comp.image, strength=0.7), ("person",))


def single_object_scene(
    rng: np.random.Generator, label: int, *, height: int = 224, width: int = 288
) -> Scene:
    """One large object of ``SINGLE_OBJECT_CLASSES[label]`` (40-90% of the width) over clutter."""
    kinds = ("gradient", "noise", "photo", "texture") if label != 0 else ("gradient", "noise")
    image = make_background(rng, height, width, kinds=kinds)
    add_clutter(rng, image, int(rng.integers(0, 4)), scale=(0.05, 0.25))
    comp = Compositor(image)
    draw = SINGLE_OBJECT_SPRITES[SINGLE_OBJECT_CLASSES[label]]
    for attempt in range(10):  # shrink until it fits (the first try almost always does)
        extent = rng.uniform(0.4, 0.9) * (width if label != 1 else height) * 0.9**attempt
        if _place_inside(rng, comp, draw(rng, int(extent)), label):
            break
    return comp.scene(photometric(rng, comp.image, strength=0.7), SINGLE_OBJECT_CLASSES)


def raccoon_scene(rng: np.random.Generator, *, height: int = 256, width: int = 320) -> Scene:
    """1-2 raccoons (30-80% of the width) among grey, striped and furry-looking clutter."""
    image = make_background(rng, height, width, kinds=("texture", "photo", "noise", "gradient"))
    add_clutter(rng, image, int(rng.integers(2, 7)), scale=(0.08, 0.4))
    comp = Compositor(image, min_visible=0.4)
    for _ in range(int(rng.integers(1, 3))):
        for _attempt in range(5):
            if _place_inside(rng, comp, raccoon_sprite(rng, int(rng.uniform(0.3, 0.8) * width)), 0):
                break
    if not comp.labels:  # always at least one raccoon: a small one fits
        _place_inside(rng, comp, raccoon_sprite(rng, int(0.3 * width)), 0)
    return comp.scene(photometric(rng, comp.image, strength=0.8), ("raccoon",))


def moving_objects(
    rng: np.random.Generator,
    *,
    num_frames: int,
    height: int = 240,
    width: int = 320,
    num_objects: int = 4,
    classes: tuple[str, ...] = SHAPE_CLASSES,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Frames of shapes moving at constant velocity and bouncing off the borders.

    Objects keep their shape and colour; track ``k`` is painted after track ``k - 1`` (on top).

    Yields:
        ``(frame uint8 [H, W, 3], boxes float32 [N, 4] xyxy of the visible parts, labels int64 [N],
        track_ids int64 [N])`` per frame; an object hidden completely is left out of that frame.
    """
    background = make_background(rng, height, width, kinds=("gradient", "noise", "texture"))
    sprites, labels, positions, velocities = [], [], [], []
    for _ in range(num_objects):
        labels.append(int(rng.integers(len(classes))))
        side = int(rng.uniform(0.12, 0.3) * min(height, width))
        sprites.append(make_sprite(rng, shape_mask(classes[labels[-1]], rng, side)))
        positions.append(rng.uniform([0, 0], [width - side, height - side]))  # (x, y)
        velocities.append(rng.uniform(1.5, 5.0, size=2) * rng.choice([-1, 1], size=2))
    for _ in range(num_frames):
        comp = Compositor(background.copy(), min_visible=0.0, min_pixels=0)
        for sprite, pos, label in zip(sprites, positions, labels):
            comp.place(sprite, int(pos[0]), int(pos[1]), label)
        alive = [i for i, count in enumerate(comp.visible_count) if count > 0]
        masks = (
            np.stack([comp.visible[i] for i in alive])
            if alive
            else np.zeros((0, height, width), bool)
        )
        frame = np.clip(comp.image + 0.5, 0, 255).astype(np.uint8)
        yield (
            frame,
            masks_to_boxes(masks),
            np.asarray(labels, np.int64)[alive],
            np.asarray(alive, np.int64),
        )
        for sprite, pos, vel in zip(sprites, positions, velocities):
            pos += vel
            for axis, limit in ((0, width - sprite.shape[1]), (1, height - sprite.shape[0])):
                if not 0 <= pos[axis] <= limit:  # bounce
                    vel[axis] = -vel[axis]
                    pos[axis] = np.clip(pos[axis], 0, limit)
