"""The ``tabletop`` built-in dataset: a webcam looking at a table with a ball, a cup and a lotion bottle.

It stands in for a small custom set captured with a webcam, labelled in Roboflow and exported in the
"YOLO v7 PyTorch" format::

    data.yaml                     train: ../train/images  val: ../valid/images  test: ../test/images
                                  nc: 3  names: ['ball', 'cup', 'lotion']
    README.dataset.txt            what Roboflow writes next to it (here: what was generated)
    train/images/webcam_0001_jpg.rf.<32 hex>.jpg    train/labels/<same stem>.txt   (class cx cy w h)
    valid/...  test/...           Roboflow's default 70 / 20 / 10 split

Scenes: a wall and a table top (wood, cloth or plain) meeting at a random height; 1-5 objects stand
on the table, painted far to near so that nearer objects hide farther ones; sizes shrink with
distance; desk clutter (blobs, pens, papers) under and in front of the objects; light changes
(colour cast, uneven light, exposure) and, in a third of the frames, motion blur of a moving hand-held
camera. Boxes are the extents of the visible pixels (exact, from the compositor's masks).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detseg.data.formats import yolo
from detseg.data.synthetic import (
    Compositor,
    Scene,
    Sprite,
    add_clutter,
    photometric,
    polygon_mask,
    scene_rng,
    textured_fill,
)
from detseg.data.synthetic_textures import make_background, ramp, random_colour, stripes
from detseg.data.types import DetectionRecord

TABLETOP_CLASSES = ("ball", "cup", "lotion")
SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.2, "test": 0.1}


# ----------------------------------------------------------------------------------- sprites


def _shade_ball(rng: np.random.Generator, side: int, colour: np.ndarray) -> np.ndarray:
    """A sphere's shading: bright spot towards the light, darker rim. float32 [side, side, 3]."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    r = side / 2
    lx, ly = rng.uniform(-0.5, 0.2), rng.uniform(-0.6, -0.1)  # light from the upper side
    dist = np.hypot((xs - r) / r - lx, (ys - r) / r - ly)
    shade = 1.25 - 0.55 * np.clip(dist, 0, 1.6) / 1.6
    return (colour * shade[..., None]).astype(np.float32)


def ball_sprite(rng: np.random.Generator, side: int) -> Sprite:
    """A ball: a shaded disc, often with seams (tennis ball) or two-colour halves (beach ball)."""
    side = max(side, 6)
    mask = np.zeros((side, side), np.uint8)
    cv2.circle(mask, (side // 2, side // 2), side // 2, 1, -1, lineType=cv2.LINE_8)
    colour = random_colour(rng, saturation=(0.45, 1.0), value=(0.5, 1.0))
    rgb = _shade_ball(rng, side, colour)
    pattern = rng.random()
    if pattern < 0.35:  # seam curves
        seam = np.zeros((side, side), np.uint8)
        cv2.ellipse(
            seam, (side // 4, side // 2), (side // 3, side // 2), 0, -70, 70, 1, max(1, side // 14)
        )
        cv2.ellipse(
            seam,
            (3 * side // 4, side // 2),
            (side // 3, side // 2),
            0,
            110,
            250,
            1,
            max(1, side // 14),
        )
        rgb[seam > 0] = rgb[seam > 0] * 0.3 + 200
    elif pattern < 0.6:  # two-colour halves
        other = _shade_ball(rng, side, random_colour(rng, saturation=(0.5, 1.0)))
        angle = rng.uniform(0, np.pi)
        ys, xs = np.mgrid[0:side, 0:side]
        half = (xs - side / 2) * np.cos(angle) + (ys - side / 2) * np.sin(angle) > 0
        rgb[half] = other[half]
    return Sprite(mask.astype(bool), rgb)


def cup_sprite(rng: np.random.Generator, height: int) -> Sprite:
    """A mug: slightly tapered body, an elliptical rim showing the dark inside, a handle."""
    height = max(height, 8)
    body_w = int(height * rng.uniform(0.7, 1.0))
    handle = int(body_w * rng.uniform(0.28, 0.4))
    taper = rng.uniform(0.0, 0.15) * body_w
    rim_h = max(2, int(body_w * rng.uniform(0.12, 0.22)))
    width = body_w + handle
    flip = rng.random() < 0.5
    body = np.array(
        [
            [0, rim_h / 2],
            [body_w - 1, rim_h / 2],
            [body_w - 1 - taper, height - 1],
            [taper, height - 1],
        ],
        np.float64,
    )
    mask = polygon_mask(height, width, [(body, 1)]).astype(np.uint8)
    cv2.ellipse(mask, (body_w // 2, rim_h // 2), (body_w // 2, rim_h // 2), 0, 0, 360, 1, -1)
    cv2.ellipse(  # handle: a thick half ring on the side
        mask, (body_w - 1, int(height * 0.45)), (handle, int(height * 0.22)), 0, -90, 90, 1,
        max(2, handle // 2),
    )  # fmt: skip
    colour = random_colour(rng, saturation=(0.0, 0.9), value=(0.35, 1.0))
    rgb = textured_fill(rng, height, width, colour)
    rgb *= (0.8 + 0.35 * ramp(rng, height, width))[..., :1]
    inside = np.zeros((height, width), np.uint8)
    cv2.ellipse(
        inside,
        (body_w // 2, rim_h // 2),
        (max(1, body_w // 2 - 2), max(1, rim_h // 2 - 1)),
        0,
        0,
        360,
        1,
        -1,
    )
    rgb[inside > 0] = rgb[inside > 0] * 0.35 + rng.uniform(10, 40)  # dark inside (coffee?)
    if rng.random() < 0.4:  # a print on the mug
        y0 = int(height * rng.uniform(0.35, 0.55))
        rgb[y0 : y0 + max(2, height // 6), int(taper) + 2 : body_w - int(taper) - 2] = (
            random_colour(rng)
        )
    mask_bool = mask.astype(bool)
    if flip:
        mask_bool, rgb = mask_bool[:, ::-1].copy(), rgb[:, ::-1].copy()
    return Sprite(mask_bool, rgb.astype(np.float32))


def lotion_sprite(rng: np.random.Generator, height: int) -> Sprite:
    """A lotion bottle: tall body with rounded shoulders, a narrower cap or pump, a label band."""
    height = max(height, 12)
    width = max(5, int(height * rng.uniform(0.3, 0.45)))
    cap_h = int(height * rng.uniform(0.12, 0.25))
    cap_w = max(3, int(width * rng.uniform(0.35, 0.6)))
    shoulder = int(width * rng.uniform(0.15, 0.35))
    x_cap = (width - cap_w) / 2
    body = np.array(
        [
            [0, cap_h + shoulder], [shoulder * 0.6, cap_h + shoulder * 0.3], [x_cap, cap_h],
            [width - 1 - x_cap, cap_h], [width - 1 - shoulder * 0.6, cap_h + shoulder * 0.3],
            [width - 1, cap_h + shoulder], [width - 1, height - 1], [0, height - 1],
        ],
        np.float64,
    )  # fmt: skip
    cap = np.array([[x_cap, 0], [width - 1 - x_cap, 0], [width - 1 - x_cap, cap_h], [x_cap, cap_h]])
    mask = polygon_mask(height, width, [(body, 1), (cap, 1)])
    body_colour = random_colour(rng, saturation=(0.0, 0.6), value=(0.55, 1.0))
    rgb = textured_fill(rng, height, width, body_colour)
    rgb *= (0.35 + 0.65 * _cylinder(width))[None, :, None]
    rgb[: cap_h + 1] = random_colour(rng, value=(0.1, 0.9)) * _cylinder(width)[None, :, None] * 1.1
    top = int(height * rng.uniform(0.4, 0.55))
    band = int(height * rng.uniform(0.18, 0.3))
    label = random_colour(rng, saturation=(0.2, 1.0))
    rgb[top : top + band, 1:-1] = label * (0.85 + 0.3 * _cylinder(width - 2))[None, :, None]
    for line in range(int(rng.integers(1, 4))):  # printed text lines
        y = top + 2 + line * max(2, band // 4)
        rgb[y : y + 1, width // 5 : 4 * width // 5] *= 0.4
    return Sprite(mask, rgb.astype(np.float32))


def _cylinder(width: int) -> np.ndarray:
    """Left-to-right shading of a cylinder lit from the front. float32 [width] in ~0.6..1.0."""
    x = np.linspace(-1, 1, max(width, 1), dtype=np.float32)
    return 0.6 + 0.4 * np.sqrt(np.clip(1 - x**2, 0, 1))


SPRITES = {"ball": ball_sprite, "cup": cup_sprite, "lotion": lotion_sprite}
HEIGHT_RATIO = {
    "ball": (0.5, 0.75),
    "cup": (0.7, 0.95),
    "lotion": (1.3, 1.9),
}  # vs. a reference size


# ----------------------------------------------------------------------------------- scenes


def _table_and_wall(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, int]:
    """A wall above a table top; returns (float32 [H, W, 3], y of the table's back edge)."""
    edge = int(height * rng.uniform(0.2, 0.5))
    wall = make_background(rng, height, width, kinds=("gradient", "noise", "photo", "texture"))
    kind = rng.random()
    if kind < 0.5:  # wood: stretched stripes with noise, brown-ish
        wood = random_colour(rng, hue=(0.03, 0.11), saturation=(0.35, 0.8), value=(0.3, 0.85))
        grain = stripes(rng, height, width)
        table = wood * (0.8 + 0.3 * grain)
    elif kind < 0.8:  # cloth / desk mat
        table = make_background(rng, height, width, kinds=("noise", "texture", "stripes"))
    else:  # plain white or grey desk
        table = np.full((height, width, 3), rng.uniform(150, 235), np.float32) * (
            0.85 + 0.3 * ramp(rng, height, width)
        )
    image = wall.copy()
    image[edge:] = table[edge:]
    image[edge : edge + 2] *= 0.6  # the table's back edge
    return image.astype(np.float32), edge


def tabletop_scene(
    rng: np.random.Generator,
    *,
    height: int = 240,
    width: int = 320,
    num_objects: tuple[int, int] = (1, 5),
    motion_blur: float = 0.33,
) -> Scene:
    """One frame: 1-5 objects of :data:`TABLETOP_CLASSES` on a table, clutter, light, blur."""
    image, edge = _table_and_wall(rng, height, width)
    add_clutter(rng, image[edge:], int(rng.integers(0, 4)), scale=(0.05, 0.25))  # on the table
    comp = Compositor(image, min_visible=0.3, min_pixels=40)
    wanted = [
        int(rng.integers(len(TABLETOP_CLASSES)))
        for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1)))
    ]
    placements = []
    for label in wanted:
        feet = rng.uniform(edge + 0.15 * (height - edge), height + 0.05 * height)  # bottom y
        depth = (feet - edge) / max(height - edge, 1)  # 0 at the back edge, ~1 at the front
        reference = height * (0.16 + 0.3 * depth) * rng.uniform(0.85, 1.15)
        size = int(reference * rng.uniform(*HEIGHT_RATIO[TABLETOP_CLASSES[label]]))
        placements.append((feet, label, SPRITES[TABLETOP_CLASSES[label]](rng, size)))
    placements.sort(key=lambda item: item[0])  # far (small feet y) first: near ones occlude
    for feet, label, sprite in placements:
        for _attempt in range(6):
            x0 = int(rng.integers(-sprite.shape[1] // 5, width - 4 * sprite.shape[1] // 5 + 1))
            if comp.place(sprite, x0, int(feet) - sprite.shape[0], label):
                break
    if not comp.labels:  # every frame shows at least one object: a mid-size one, fully inside
        sprite = ball_sprite(rng, height // 4)
        comp.place(sprite, width // 2 - height // 8, height - height // 4 - 2, 0)
    if rng.random() < 0.5:  # something in front: a pen, a hand-like blob, a paper corner
        add_clutter(rng, image, int(rng.integers(1, 3)), scale=(0.04, 0.18), compositor=comp)
    frame = photometric(rng, comp.image, strength=1.0)
    if rng.random() < motion_blur:
        frame = motion_blurred(frame, int(rng.integers(3, 10)), rng.uniform(0, 180))
    return comp.scene(frame, TABLETOP_CLASSES)


def motion_blurred(image: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Blur along a line of ``length`` pixels at ``angle_deg`` (a camera moving while exposing)."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle_deg, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    kernel /= max(float(kernel.sum()), 1e-6)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


# ----------------------------------------------------------------------------------- writer


def split_counts(num_images: int) -> dict[str, int]:
    """Roboflow's 70 / 20 / 10 split; valid and test get at least one image when there are 3+."""
    if num_images < 3:
        return {"train": num_images, "valid": 0, "test": 0}
    valid = max(1, round(num_images * SPLIT_FRACTIONS["valid"]))
    test = max(1, round(num_images * SPLIT_FRACTIONS["test"]))
    return {"train": num_images - valid - test, "valid": valid, "test": test}


def roboflow_name(rng: np.random.Generator, index: int) -> str:
    """``webcam_0001_jpg.rf.<32 hex>.jpg``: Roboflow keeps the source name and adds a hash."""
    return f"webcam_{index + 1:04d}_jpg.rf.{rng.bytes(16).hex()}.jpg"


def build_tabletop(out: Path, num_images: int, seed: int, params: dict[str, Any]) -> dict[str, int]:
    """Write the Roboflow "YOLO v7 PyTorch" export (see the module docstring)."""
    from detseg.data.recipe_writers import detection_record  # the shared record maker

    counts = split_counts(num_images)
    result = {"images": num_images, "instances": 0}
    start = 0
    for split, count in counts.items():
        indices = range(start, start + count)
        start += count

        def samples(indices: range = indices) -> Iterator[tuple[DetectionRecord, np.ndarray]]:
            for i in indices:
                rng = scene_rng(seed, "tabletop", i)
                name = roboflow_name(rng, i)
                scene = tabletop_scene(rng, height=params["height"], width=params["width"])
                result["instances"] += len(scene.labels)
                yield detection_record(scene, i + 1, name), scene.image

        yolo.write(out, samples(), list(TABLETOP_CLASSES), split=split)
        result[f"{split}_images"] = count
    (out / "README.dataset.txt").write_text(
        "Table-top objects (ball, cup, lotion) - built-in stand-in for a webcam dataset\n"
        "exported from Roboflow in the YOLO v7 PyTorch format.\n\n"
        f"{num_images} images ({counts['train']} train / {counts['valid']} valid / "
        f"{counts['test']} test), {params['width']}x{params['height']} px, seed {seed}.\n"
        "Labels: one line per object, 'class cx cy w h' normalised to 0..1.\n"
    )
    return result


def read_tabletop(root: Path, split: str) -> Any:
    """The export read back with the YOLO reader (:func:`detseg.data.formats.yolo.read`).

    Six-decimal normalised labels put a box that touches the right or bottom border up to
    ``1e-6 * size`` pixels past it; those boxes are clipped to the image.
    """
    dataset = yolo.read(Path(root) / "data.yaml", split)
    for record in dataset.records:
        limits = np.array([record.width, record.height] * 2, dtype=np.float32)
        record.boxes = np.clip(record.boxes, 0, limits).astype(np.float32)
    return dataset
