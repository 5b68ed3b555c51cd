"""Colours and textured backgrounds for the synthetic scenes (numpy + OpenCV, float32 0..255).

Backgrounds are noise, gradients, stripes, or random crops of the scikit-image sample photos and
textures (bundled with scikit-image: nothing is downloaded), loaded once and cached.
"""

from __future__ import annotations

import colorsys
import functools

import cv2
import numpy as np

PHOTO_NAMES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
)
TEXTURE_NAMES = ("brick", "grass", "gravel", "camera", "moon", "coins")
BACKGROUND_KINDS = ("photo", "texture", "noise", "gradient", "stripes")


def random_colour(
    rng: np.random.Generator,
    *,
    saturation: tuple[float, float] = (0.1, 1.0),
    value: tuple[float, float] = (0.25, 1.0),
    hue: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """An RGB colour drawn uniformly in an HSV box. Returns float32 [3] in 0..255."""
    h = rng.uniform(*hue) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value))
    return np.asarray(rgb, dtype=np.float32) * 255.0


# ----------------------------------------------------------------------------------- backgrounds


@functools.cache
def _library_image(name: str) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.float32)


def photo_crop(rng: np.random.Generator, height: int, width: int, name: str) -> np.ndarray:
    """A random crop (30-100% of the side, maybe mirrored) of a scikit-image sample photo, resized.

    Returns:
        float32 [height, width, 3] in 0..255. Grey textures are tinted with a random colour.
    """
    photo = _library_image(name)
    ph, pw = photo.shape[:2]
    crop_h = min(ph, pw * height / width) * rng.uniform(0.3, 1.0)
    crop_h, crop_w = max(int(crop_h), 4), max(int(crop_h * width / height), 4)
    y0 = int(rng.integers(0, ph - crop_h + 1))
    x0 = int(rng.integers(0, pw - crop_w + 1))
    crop = photo[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)
    if name in TEXTURE_NAMES:
        out = out * (random_colour(rng, saturation=(0.0, 0.6), value=(0.6, 1.0)) / 255.0)
    return out


def smooth_noise(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    cells: int = 4,
    channels: int = 3,
    octaves: int = 3,
) -> np.ndarray:
    """Band-limited noise: random grids of ``cells * 2**k`` cells upsampled (cubic) and summed.

    Returns:
        float32 [height, width, channels] with values roughly in [0, 1].
    """
    out = np.zeros((height, width, channels), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        n = cells * 2**octave
        grid_h = max(2, round(n * height / max(height, width))) + 1
        grid_w = max(2, round(n * width / max(height, width))) + 1
        grid = rng.random((grid_h, grid_w, channels), dtype=np.float32)
        up = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        out += amplitude * up.reshape(height, width, channels)
        total += amplitude
        amplitude *= 0.5
    return out / total


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _ramp(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A linear ramp in a random direction, float32 [H, W, 1] from 0 to 1."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.ogrid[0:height, 0:width]
    proj = (xs * np.cos(angle) + ys * np.sin(angle)).astype(np.float32)
    proj -= proj.min()
    return (proj / max(float(proj.max()), 1.0))[..., None]


def stripes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Sinusoidal stripes of random period / angle. Returns float32 [H, W, 1] in [0, 1]."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 40)
    ys, xs = np.ogrid[0:height, 0:width]
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period)
    wave = 0.5 + 0.5 * np.sin(phase).astype(np.float32)
    if rng.random() < 0.5:  # hard-edged stripes
        wave = (wave > 0.5).astype(np.float32)
    return wave[..., None]


def make_background(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    kinds: tuple[str, ...] = BACKGROUND_KINDS,
    photos: tuple[str, ...] = PHOTO_NAMES,
) -> np.ndarray:
    """A textured background: one of ``kinds``, sometimes blended with a second one.

    Returns:
        float32 [height, width, 3] in 0..255.
    """

    def one(kind: str) -> np.ndarray:
        if kind == "photo":
            return photo_crop(rng, height, width, str(rng.choice(photos)))
        if kind == "texture":
            return photo_crop(rng, height, width, str(rng.choice(TEXTURE_NAMES)))
        c1, c2 = random_colour(rng), random_colour(rng)
        if kind == "noise":
            return _mix(c1, c2, smooth_noise(rng, height, width, cells=int(rng.integers(2, 8))))
        if kind == "gradient":
            return _mix(c1, c2, _ramp(rng, height, width))
        if kind == "stripes":
            return _mix(c1, c2, stripes(rng, height, width))
        raise ValueError(f"unknown background kind {kind!r}")

    image = one(str(rng.choice(kinds)))
    if rng.random() < 0.3:
        image = _mix(image, one(str(rng.choice(kinds))), np.float32(rng.uniform(0.2, 0.5)))
    return image.astype(np.float32, copy=False)
