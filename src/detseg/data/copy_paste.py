"""Copy-paste augmentation for instance segmentation (numpy only, no framework).

After "Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation" (Ghiasi et
al., CVPR 2021): objects cut out of another training image along their masks are pasted into this
one, and every mask is updated to what stays *visible*. It multiplies the number of occlusions a
model sees, which is where a mask head learns to leave out the pixels of the object in front.

Two depth orders:

- ``"top"`` (the paper): a pasted object lies in front of everything already in the image;
- ``"box_bottom"``: for objects standing on a ground plane seen from eye height (pedestrians, cars),
  the object whose box ends lower in the image is the nearer one and hides the other. A pasted
  object keeps its row (its size matches its distance) and moves only left or right.

As in :class:`detseg.data.synthetic.Compositor`, a paste that would leave any object, old or new,
with less than ``min_visibility`` of its pixels (counted when the transform starts) is refused and
tried elsewhere. Boxes of changed objects become the extent of their new masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from detseg.data.transforms import Target, boxes_from_masks, hflip

DEPTH_ORDERS = ("top", "box_bottom")
SampleSource = Callable[[int], tuple[np.ndarray, Target]]


def shift_columns(array: np.ndarray, dx: int, width: int, height: int | None = None) -> np.ndarray:
    """Move ``array`` ([H_src, W_src, ...]) right by ``dx`` columns into a ``height x width`` frame.

    Columns that leave the frame are cut, new ones are zero. Rows keep their index: a taller
    source loses its bottom rows, a shorter one is padded with zeros below (``height`` defaults
    to the source's).
    """
    height = array.shape[0] if height is None else height
    out = np.zeros((height, width, *array.shape[2:]), dtype=array.dtype)
    rows = min(height, array.shape[0])
    src_lo, src_hi = max(0, -dx), min(array.shape[1], width - dx)
    if src_hi > src_lo:
        out[:rows, src_lo + dx : src_hi + dx] = array[:rows, src_lo:src_hi]
    return out


def paste_instance(
    image: np.ndarray,
    target: Target,
    src_image: np.ndarray,
    src_mask: np.ndarray,
    src_label: int,
    *,
    dx: int = 0,
    depth: str = "top",
    min_visibility: float = 0.3,
    min_pixels: int = 12,
    reference_areas: Sequence[float] | None = None,
) -> tuple[np.ndarray, Target] | None:
    """Paste one object of another image, moved ``dx`` columns right, in depth order.

    Args:
        image: RGB uint8 [H, W, 3]; ``src_image``: [H_src, W_src, 3], any size: rows keep their
            index (see :func:`shift_columns`), so an object below row ``H`` is cut.
        target: ``boxes`` float32 [N, 4] xyxy, ``labels`` [N], ``masks`` uint8 [N, H, W], optional
            ``iscrowd`` [N]; masks are the visible pixels of each object.
        src_mask: [H_src, W_src] the object's visible pixels in ``src_image``; ``src_label``: its label.
        depth: ``"top"`` (pasted in front) or ``"box_bottom"`` (the lower box bottom is nearer; ties
            go to the object already there).
        min_visibility: smallest share of an object's reference area that must stay visible, for
            the old objects (``reference_areas``, default their pixel counts now) and the new one
            (its pixel count after the move).
        min_pixels: smallest number of pixels the pasted object may show.
    Returns:
        ``(image, target)`` with the object appended last, or None when the paste is refused (the
        inputs are not changed either way).
    """
    if depth not in DEPTH_ORDERS:
        raise ValueError(f"depth must be one of {DEPTH_ORDERS}, got {depth!r}")
    height, width = image.shape[:2]
    mask = shift_columns(np.asarray(src_mask, dtype=bool), dx, width, height)  # [H, W]
    area = int(mask.sum())
    masks = np.asarray(target["masks"], dtype=bool).reshape(-1, height, width)  # [N, H, W]
    boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
    if area == 0:
        return None
    before = masks.sum(axis=(1, 2))  # [N]
    if reference_areas is None:
        reference_areas = before
    if depth == "box_bottom" and len(masks):
        bottom = float(np.flatnonzero(mask.any(axis=1))[-1] + 1)
        in_front = boxes[:, 3] >= bottom  # [N]
        visible = mask & ~masks[in_front].any(axis=0)
    else:
        visible = mask
    shown = int(visible.sum())
    if shown < max(min_visibility * area, min_pixels):
        return None
    kept = masks & ~visible  # [N, H, W]
    left = kept.sum(axis=(1, 2))
    changed = left < before
    if np.any(changed & (left < min_visibility * np.asarray(reference_areas, dtype=np.float64))):
        return None
    out_image = image.copy()
    out_image[visible] = shift_columns(src_image, dx, width, height)[visible]
    out = dict(target)
    new_boxes = boxes.copy()
    new_boxes[changed] = boxes_from_masks(kept[changed])
    out["boxes"] = np.concatenate([new_boxes, boxes_from_masks(visible[None])]).astype(np.float32)
    out["labels"] = np.append(np.asarray(target["labels"], dtype=np.int64), np.int64(src_label))
    if target.get("iscrowd") is not None:
        out["iscrowd"] = np.append(np.asarray(target["iscrowd"], dtype=bool), False)
    out["masks"] = np.concatenate([kept, visible[None]]).astype(np.uint8)
    return out_image, out


class CopyPaste:
    """With probability ``p``, paste 1 to ``max_objects`` objects of another training image.

    Args:
        source: ``source(index) -> (image, target)``, a training sample without augmentation (for
            example ``functools.partial(detection_sample, train_dataset)``); never the validation
            split. ``num_sources``: how many indices it takes.
        p: probability that an image gets pastes at all.
        max_objects: most objects pasted into one image (each drawn from the same source image,
            which is mirrored with probability 0.5).
        depth: see :func:`paste_instance`.
        attempts: positions tried per object before it is given up.
        min_visibility: see :func:`paste_instance`.

    Source and image may differ in size (a pasted object keeps its rows, see :func:`paste_instance`).
    Crowd regions are never pasted.
    """

    def __init__(
        self,
        source: SampleSource,
        num_sources: int,
        *,
        p: float = 0.5,
        max_objects: int = 2,
        depth: str = "top",
        attempts: int = 5,
        min_visibility: float = 0.3,
    ) -> None:
        if depth not in DEPTH_ORDERS:
            raise ValueError(f"depth must be one of {DEPTH_ORDERS}, got {depth!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.source, self.num_sources = source, num_sources
        self.p, self.max_objects, self.depth = p, max_objects, depth
        self.attempts, self.min_visibility = attempts, min_visibility

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        if target.get("masks") is None or self.num_sources < 1 or rng.random() >= self.p:
            return image, target
        src_image, src_target = self.source(int(rng.integers(self.num_sources)))
        if rng.random() < 0.5:
            src_image, src_target = hflip(src_image, src_target)
        crowd = np.asarray(src_target.get("iscrowd", np.zeros(len(src_target["labels"]))), bool)
        candidates = np.flatnonzero(~crowd)
        if candidates.size == 0:
            return image, target
        count = int(rng.integers(1, min(self.max_objects, candidates.size) + 1))
        width = image.shape[1]
        reference = list(np.asarray(target["masks"], dtype=bool).sum(axis=(1, 2)))
        for k in rng.choice(candidates, size=count, replace=False):
            x1, _, x2, _ = (int(v) for v in boxes_from_masks(src_target["masks"][k : k + 1])[0])
            for _attempt in range(self.attempts):
                dx = int(rng.integers(-x1, max(width - x2, -x1) + 1))  # keep it inside the frame
                pasted = paste_instance(
                    image,
                    target,
                    src_image,
                    src_target["masks"][k],
                    int(src_target["labels"][k]),
                    dx=dx,
                    depth=self.depth,
                    min_visibility=self.min_visibility,
                    reference_areas=reference,
                )
                if pasted is not None:
                    image, target = pasted
                    reference.append(float(target["masks"][-1].sum()))
                    break
        return image, target
