# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # COCO instances to semantic class maps
#
# A COCO file describes *instances*: every object has its own mask, its category and an `iscrowd`
# flag. A semantic segmentation model (the U-Net, FCN and PSPNet of this folder) wants one
# *class map* per image instead: an 8-bit picture whose pixel values are class indices. This
# notebook converts one into the other with pycocotools and makes every decision explicit:
#
# - reading the file with `pycocotools.coco.COCO`, filtering by category (`getCatIds`,
#   `getImgIds`, `getAnnIds`) and decoding each instance with `annToMask`;
# - what a compressed RLE string is, decoded by hand and proven equal to pycocotools;
# - merging the instances of an image into one class map: which instance wins where two overlap,
#   and what a crowd region becomes (the ignore value 255);
# - overlays with `detseg.viz`, the class maps written as PNGs in the `images/` + `masks/` layout
#   that `detseg.data.formats.maskpng.read` reads back (round trip proven), and every class map
#   checked against one built independently with detseg's own COCO reader.
#
# - **Framework**: NumPy and pycocotools (no deep learning here).
# - **Dataset**: the built-in `shapes` dataset (COCO instances JSON with compressed RLE masks,
#   generated on first use into `data/shapes-0/`), plus a hand-edited copy of its validation file
#   with a crowd region and overlapping instances. Nothing is downloaded.
# - **Run time**: under a minute on a 2-core CPU for the 1000 images of `shapes`, kernel start and
#   the dataset's generation included (the last cell prints the time of the run shown); no GPU
#   needed.
#
# Previous: [lesson 4, torchvision's segmentation models](4_torchvision_models.ipynb). This is the
# last lesson of the folder; next: the following lesson of the
# [reading order](../README.md#lessons-in-reading-order).

# %% [markdown]
# ## Setup
#
# The built-in dataset is generated on first use (a few seconds). Pictures and the converted
# dataset go to `runs/05_unet_segmentation/coco_to_semantic/`.

# %%
import contextlib
import io
import json
import shutil
import time

import numpy as np
from IPython.display import Image, display
from pycocotools.coco import COCO

from detseg import settings
from detseg.data import recipes
from detseg.data.formats import coco as coco_format
from detseg.data.formats import maskpng
from detseg.data.imageio import read_image, write_image
from detseg.data.samples import decode_segmentations
from detseg.viz import colorize_mask, default_palette, draw_segmentation, image_grid

NOTEBOOK_START = time.perf_counter()
IGNORE_INDEX = 255
OUT = settings.runs_root() / "05_unet_segmentation" / "coco_to_semantic"
OUT.mkdir(parents=True, exist_ok=True)
ROOT = recipes.ensure("shapes")
SPLITS = ("train", "val")
json_path = {split: ROOT / "annotations" / f"instances_{split}.json" for split in SPLITS}
print(f"data/{ROOT.name}/ holds", [p.name for p in sorted(ROOT.iterdir())])
print(f"outputs go to runs/{OUT.relative_to(settings.runs_root())}/")


def load_coco(path):
    """pycocotools' COCO index of one file, without its 'loading annotations...' chatter."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def show_grid(tiles, titles, name, ncols):
    """Write the picture grid as OUT/<name>.png and show a JPEG copy (a smaller notebook)."""
    grid = image_grid(tiles, titles=titles, ncols=ncols)
    write_image(OUT / f"{name}.png", grid)
    display(Image(filename=write_image(OUT / f"{name}.jpg", grid, jpeg_quality=85)))


# %% [markdown]
# ## 1. The COCO index
#
# `COCO(path)` reads the JSON and builds lookup tables: `coco.imgs`, `coco.anns` and `coco.cats`
# by id, plus which annotations belong to which image (`imgToAnns`) and which images hold which
# category (`catToImgs`). Category ids are whatever the file says (real COCO uses 1..90 with
# gaps); the class map needs contiguous indices, so we number the categories 1..C in order of
# increasing id and keep 0 for background (the order `detseg.data.formats.coco.read` uses too).

# %%
coco = load_coco(json_path["val"])
category_ids = sorted(coco.getCatIds())
class_names = ["background"] + [coco.cats[c]["name"] for c in category_ids]
class_of_category = {category: index + 1 for index, category in enumerate(category_ids)}
print(f"{len(coco.imgs)} images, {len(coco.anns)} annotations")
print("categories:", {c: coco.cats[c]["name"] for c in category_ids})
print("class map values:", dict(enumerate(class_names)), "and", IGNORE_INDEX, "= ignore")
first_annotation = coco.anns[min(coco.anns)]
print({key: str(value)[:60] for key, value in first_annotation.items()})

# %% [markdown]
# ## 2. Category filters
#
# `getCatIds(catNms=...)` turns names into ids. `getImgIds(catIds=...)` returns the images that
# hold **every** listed category (an intersection, a common surprise); for "any of them", ask
# once per category and take the union. `getAnnIds(imgIds=..., catIds=..., iscrowd=None)` lists
# the annotations of some images restricted to some categories; `iscrowd=None` keeps crowd
# regions, `iscrowd=False` drops them.

# %%
circle_star = coco.getCatIds(catNms=["circle", "star"])
with_circle = set(coco.getImgIds(catIds=circle_star[:1]))
with_star = set(coco.getImgIds(catIds=circle_star[1:]))
with_both = set(coco.getImgIds(catIds=circle_star))
with_either = set().union(*(coco.getImgIds(catIds=[c]) for c in circle_star))
assert with_both == with_circle & with_star and with_either == with_circle | with_star
print(
    f"category ids {circle_star}: {len(with_circle)} images with a circle, "
    f"{len(with_star)} with a star, {len(with_both)} with both, {len(with_either)} with either"
)
example_id = min(with_either)
example_anns = coco.loadAnns(coco.getAnnIds(imgIds=example_id, catIds=circle_star, iscrowd=None))
print(
    f"image {example_id}: {len(coco.getAnnIds(imgIds=example_id))} annotations, "
    f"{len(example_anns)} of them circles or stars"
)

# %% [markdown]
# ## 3. One mask per instance, and what `annToMask` decodes
#
# `coco.annToMask(ann)` returns a uint8 [H, W] array with 1 inside the instance. A segmentation
# is stored in one of three ways: polygons (real COCO's usual case, rasterised by pycocotools),
# *uncompressed RLE* (`counts` is a list; COCO's crowd regions) or *compressed RLE* (`counts` is
# a string; what our `shapes` file holds). RLE = run-length encoding: the mask is read column by
# column (Fortran order) and stored as alternating run lengths of 0s and 1s, starting with 0s.
# The compressed form writes each run as a few characters of 5 bits each (`chr(48 + bits)`, bit
# `0x20` = "more characters follow", bit `0x10` of the last one = negative); from the third run on
# it stores the difference to the run two places back, which is small for smooth shapes. Decoded
# by hand:


# %%
def decode_rle_counts(text: str) -> list[int]:
    """COCO compressed RLE string -> run lengths [0s, 1s, 0s, ...]."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[position]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:  # sign bit of the last chunk
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]  # stored as the difference to the run two places back
        counts.append(value)
    return counts


def rle_to_mask_by_hand(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str or uncompressed list counts) -> bool [H, W]."""
    height, width = rle["size"]
    counts = rle["counts"]
    runs = decode_rle_counts(counts) if isinstance(counts, str) else list(counts)
    values = np.repeat(np.arange(len(runs)) % 2, runs)  # 0,0,..,1,1,..,0,..  [H * W]
    assert len(values) == height * width, "runs must cover the image exactly"
    return values.reshape(width, height).T.astype(bool)  # column-major -> [H, W]


print(
    "first runs of",
    first_annotation["id"],
    ":",
    decode_rle_counts(first_annotation["segmentation"]["counts"])[:8],
)
for ann in coco.anns.values():
    mine = rle_to_mask_by_hand(ann["segmentation"])
    np.testing.assert_array_equal(mine, coco.annToMask(ann).astype(bool))
    assert mine.sum() == ann["area"]
print(f"hand decoder == annToMask on all {len(coco.anns)} annotations (and areas match)")

# %% [markdown]
# ## 4. Many instances, one class map
#
# Two decisions turn a stack of instance masks into one class map.
#
# **Overlaps.** When two masks claim the same pixel, one must win. Possible rules: the later
# annotation in the file, the higher category id (torchvision's segmentation reference takes the
# maximum id, then sets every overlapping pixel to 255), or area. We paint the instances from the
# largest to the smallest, so **the smaller instance wins**: in photos the small object usually
# lies in front of the large one (a cup on a table, a tie on a shirt), and a small object that
# loses its overlap can vanish entirely, while a large one only loses a few percent. The rule
# does not depend on the order of the file, and equal areas fall back to the file order (the
# later one wins).
#
# **Crowds.** An `iscrowd=1` region covers a group of objects (a stand full of people) with one
# rough outline that includes the gaps between them; its pixels are not reliably the class,
# and COCO's own evaluation ignores them. We paint crowds first as `255`, the ignore value that
# `seg_training.py`'s cross-entropy skips, so any individually annotated instance on top of a
# crowd keeps its class.


# %%
def merge_instances(
    masks: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray | None = None,
    *,
    ignore_index: int = 255,
) -> np.ndarray:
    """Instance masks -> one class-index map.

    Args:
        masks: bool or {0, 1} [N, H, W], one mask per instance.
        labels: int [N], class index of each instance, 1..C (0 is background).
        iscrowd: bool [N]; crowd regions become ``ignore_index`` where no instance covers them.
    Returns:
        uint8 [H, W]: 0 background, 1..C classes, ``ignore_index`` for crowd-only pixels. Where
        instances overlap, the smaller one wins (painted last); equal areas: the later one.
    """
    masks = np.asarray(masks, dtype=bool)
    crowd = np.zeros(len(masks), bool) if iscrowd is None else np.asarray(iscrowd, bool)
    class_map = np.zeros(masks.shape[1:], dtype=np.uint8)
    for mask in masks[crowd]:
        class_map[mask] = ignore_index
    areas = masks.sum(axis=(1, 2))  # [N]
    for index in np.argsort(-areas, kind="stable"):  # largest first, ties in file order
        if not crowd[index]:
            class_map[masks[index]] = labels[index]
    return class_map


# %% [markdown]
# A hand-made case: a 4 x 4 square of class 1 under a 2 x 2 square of class 2 that sticks out by
# one pixel, and a crowd region of class 1 along the right edge that the big square overlaps.
# The small square keeps all its 4 pixels; the crowd pixels that no instance covers become 255.

# %%
big = np.zeros((5, 6), bool)
big[0:4, 0:4] = True
small = np.zeros((5, 6), bool)
small[3:5, 2:4] = True
crowd_region = np.zeros((5, 6), bool)
crowd_region[:, 3:6] = True
hand_map = merge_instances(
    np.stack([small, big, crowd_region]), np.array([2, 1, 1]), np.array([False, False, True])
)
print(hand_map)
expected = np.array(
    [[1, 1, 1, 1, 255, 255],
     [1, 1, 1, 1, 255, 255],
     [1, 1, 1, 1, 255, 255],
     [1, 1, 2, 2, 255, 255],
     [0, 0, 2, 2, 255, 255]]
)  # fmt: skip
np.testing.assert_array_equal(hand_map, expected)

# %% [markdown]
# The whole conversion of one image with pycocotools: the annotations of the wanted categories
# (crowds included), `annToMask` on each, category id -> class index, merge.


# %%
def class_map_from_coco(coco_index, image_id, class_of_category):
    """uint8 [H, W] class map of one image; categories missing from the dict stay background."""
    info = coco_index.imgs[image_id]
    anns = coco_index.loadAnns(
        coco_index.getAnnIds(imgIds=image_id, catIds=list(class_of_category), iscrowd=None)
    )
    masks = np.zeros((len(anns), info["height"], info["width"]), bool)
    for index, ann in enumerate(anns):
        masks[index] = coco_index.annToMask(ann)
    labels = np.array([class_of_category[a["category_id"]] for a in anns], dtype=np.int64)
    iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns])
    return merge_instances(masks, labels, iscrowd, ignore_index=IGNORE_INDEX)


def image_of(split, coco_index, image_id):
    return read_image(ROOT / split / coco_index.imgs[image_id]["file_name"])


# %% [markdown]
# In `shapes` the masks are the *visible* parts of the objects (the generator cuts away what a
# later object hides), so they never overlap and the overlap rule never fires; real COCO polygons
# are drawn one object at a time and do overlap. Let us check, then look at three images with all
# five classes, and the same images keeping only circles and stars (the other shapes become
# background: this is how torchvision's reference keeps the 20 Pascal VOC classes out of COCO's
# 80). Colours: the Pascal VOC palette of `detseg.viz` (255 = ignore is drawn cream).

# %%
overlapping_pixels = 0
for image_id in coco.imgs:
    masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
    if masks:
        overlapping_pixels += int((np.sum(masks, axis=0) > 1).sum())
print("pixels claimed by two instances in the val split of shapes:", overlapping_pixels)

only_circle_star = {category: index + 1 for index, category in enumerate(circle_star)}
palette = default_palette()
tiles, titles = [], []
for image_id in sorted(coco.imgs)[:3]:
    image = image_of("val", coco, image_id)
    full_map = class_map_from_coco(coco, image_id, class_of_category)
    filtered_map = class_map_from_coco(coco, image_id, only_circle_star)
    tiles += [
        image,
        colorize_mask(full_map, palette),
        draw_segmentation(image, full_map, palette),
        draw_segmentation(image, filtered_map, palette),
    ]
    titles += [f"image {image_id}", "class map", "overlay", "circle + star only"]
show_grid(tiles, titles, "class_maps", ncols=4)

# %% [markdown]
# ## 5. A crowd region and overlapping instances
#
# Our file has neither, so we add both to a copy of the validation file, the way real COCO
# stores them: a crowd of circles over the top quarter of the first image, as an *uncompressed*
# RLE (a plain list of runs, column-major), and a large rectangle instance behind the shapes of
# the second image, as a polygon. Encoding the RLE by hand is the inverse of the decoder above.


# %%
def mask_to_uncompressed_rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> {"size": [H, W], "counts": [0s, 1s, 0s, ...]} (column-major runs)."""
    flat = np.asarray(mask, bool).T.reshape(-1).astype(np.int8)  # Fortran order
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat[0]:  # runs start with zeros
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


edited = json.loads(json_path["val"].read_text())
first_image, second_image = sorted(edited["images"], key=lambda i: i["id"])[:2]
height, width = first_image["height"], first_image["width"]
band = np.zeros((height, width), bool)
band[: height // 4] = True
crowd_rle = mask_to_uncompressed_rle(band)
np.testing.assert_array_equal(rle_to_mask_by_hand(crowd_rle), band)
height, width = second_image["height"], second_image["width"]
x0, y0, x1, y1 = width * 0.1, height * 0.1, width * 0.9, height * 0.9
next_id = max(a["id"] for a in edited["annotations"]) + 1
edited["annotations"] += [
    {"id": next_id, "image_id": first_image["id"], "category_id": category_ids[0],
     "iscrowd": 1, "segmentation": crowd_rle, "area": int(band.sum()),
     "bbox": [0, 0, band.shape[1], band.shape[0] // 4]},
    {"id": next_id + 1, "image_id": second_image["id"], "category_id": category_ids[2],
     "iscrowd": 0, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
     "area": (x1 - x0) * (y1 - y0), "bbox": [x0, y0, x1 - x0, y1 - y0]},
]  # fmt: skip
json_path["edited"] = OUT / "instances_val_edited.json"
json_path["edited"].write_text(json.dumps(edited))

coco_edited = load_coco(json_path["edited"])
tiles, titles = [], []
captions = {first_image["id"]: "crowd band = 255", second_image["id"]: "rectangle added behind"}
for image_id, caption in captions.items():
    image = image_of("val", coco_edited, image_id)
    edited_map = class_map_from_coco(coco_edited, image_id, class_of_category)
    values, counts = np.unique(edited_map, return_counts=True)
    print(f"image {image_id}: pixels per value", dict(zip(values.tolist(), counts.tolist())))
    tiles += [image, draw_segmentation(image, edited_map, palette)]
    titles += [f"image {image_id}", caption]
show_grid(tiles, titles, "crowd_and_overlap", ncols=4)

# %% [markdown]
# The crowd band is 255 except where an instance lies on it, and every shape of the second image
# is still visible on top of the big rectangle: the smaller instance won each overlap.
#
# ## 6. The whole dataset as class-map PNGs
#
# Every image of both splits, converted and written with `detseg.data.formats.maskpng.write` in
# the layout its `read` expects: `<split>/images/<stem>.png`, `<split>/masks/<stem>.png` (one
# channel, values 0..5 and 255) and `<split>/classes.txt` (line i = class i). The images are
# decoded once and written losslessly as PNG.

# %%
shutil.rmtree(OUT / "shapes_semantic", ignore_errors=True)  # no stale files from a larger run
converted = {}
for split in SPLITS:
    coco_split = coco if split == "val" else load_coco(json_path[split])
    class_maps = {
        image_id: class_map_from_coco(coco_split, image_id, class_of_category)
        for image_id in sorted(coco_split.imgs)
    }
    samples = (
        (
            coco_split.imgs[i]["file_name"].rsplit(".", 1)[0],
            image_of(split, coco_split, i),
            class_maps[i],
        )
        for i in class_maps
    )
    maskpng.write(OUT / "shapes_semantic" / split, samples, class_names)
    converted[split] = (coco_split, class_maps)
    print(f"{split}: {len(class_maps)} images and class maps -> shapes_semantic/{split}/")

# %% [markdown]
# ## 7. Round trip through the PNG reader
#
# `maskpng.read` finds the pairs and the class names; each pair it loads must equal what we
# wrote: the same pixels, the same class indices (PNG is lossless; 255 survives as 255).

# %%
for split in SPLITS:
    dataset = maskpng.read(OUT / "shapes_semantic" / split)
    coco_split, class_maps = converted[split]
    assert dataset.classes == class_names and len(dataset) == len(class_maps)
    by_stem = {coco_split.imgs[i]["file_name"].rsplit(".", 1)[0]: i for i in class_maps}
    for record in dataset.records:
        image_id = by_stem[record.file_name.split("/")[-1].rsplit(".", 1)[0]]
        image, mask = dataset.load(record)
        np.testing.assert_array_equal(mask, class_maps[image_id])
        np.testing.assert_array_equal(image, image_of(split, coco_split, image_id))
    print(f"{split}: maskpng.read gives back all {len(dataset)} images and class maps")

# %% [markdown]
# ## 8. An independent check with detseg's own reader
#
# The same class maps built another way: `detseg.data.formats.coco.read` (our JSON reader, which
# maps category ids to contiguous labels 0..C-1 and keeps `iscrowd`) and
# `detseg.data.samples.decode_segmentations` (all masks of an image in one pycocotools call),
# then labels + 1 and the same merge rule. Equal for every image, the edited file included.

# %%
coco_of = {"train": converted["train"][0], "val": coco, "edited": coco_edited}
for name, coco_index in coco_of.items():
    dataset = coco_format.read(json_path[name])
    assert dataset.classes == class_names[1:]
    for record in dataset.records:
        masks = decode_segmentations(record.segmentations or [], record.height, record.width)
        ours = merge_instances(masks, record.labels + 1, record.iscrowd)
        expected_map = class_map_from_coco(coco_index, record.image_id, class_of_category)
        np.testing.assert_array_equal(ours, expected_map)
    print(f"{name}: pycocotools path == detseg reader path on all {len(dataset)} images")

# %% [markdown]
# ## Summary
#
# - pycocotools' `COCO` indexes a file; `getImgIds(catIds=[a, b])` is an intersection,
#   `getAnnIds(..., iscrowd=None)` keeps crowds; `annToMask` decodes polygons and both RLE forms.
# - Compressed RLE is column-major run lengths, 5 bits per character, stored as differences.
# - Merging instances needs two rules said out loud: here the smaller instance wins an overlap
#   and crowd-only pixels become the ignore value 255.
# - The result is a plain `images/` + `masks/` dataset that `maskpng.read` loads, equal to what
#   detseg's own reader builds; lessons 1-3 train on exactly such pairs.
#
# ## Exercises
#
# 1. Switch the overlap rule to torchvision's (highest category id, then 255 wherever two
#    instances overlap) and count how many pixels of the edited file change.
# 2. With the circle + star filter, the other shapes became background, which teaches a model
#    that a triangle is background. Make them 255 instead: what changes in `class_map_from_coco`?
# 3. Count the pixels of each class over the converted train split (read it back with
#    `maskpng.read`) and derive inverse-frequency weights for the cross-entropy loss.
# 4. Encode a mask with `pycocotools.mask.encode` and decode its `counts` with
#    `decode_rle_counts`: how many characters does a 256 x 256 circle take, and how many runs?

# %%
print(f"run time of this notebook: {time.perf_counter() - NOTEBOOK_START:.1f} s")
