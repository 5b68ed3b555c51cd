"""The bad-input suite: every entry point answers bad input with exit 2 and one line, writing nothing.

Rows are :class:`detseg.bad_input.Case` (format in that module's docstring): the core's are below,
each example folder adds its own in ``NN_name/tests/bad_input_cases.py`` (a module-level ``CASES``
list), collected here. For every row the test creates the bad files in an empty temporary folder,
runs the entry point in this process (``detseg.cli.main(argv)``, or the script's ``main`` under
``run_cli`` as its ``__main__`` does) and asserts:

- exit status 2;
- stderr is exactly one line: ``error: ...`` holding every expected text and ``"; "`` before the fix;
- no ``Traceback`` in stdout or stderr;
- nothing under the temporary folder (also the current folder, DETSEG_RUNS is in it) was
  created, changed or removed. DETSEG_DATA is one folder for the whole session: a built-in dataset
  generated there is a cache, not an output.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest

from detseg.bad_input import Case, make_file, png_bytes

ROOT = Path(__file__).resolve().parents[1]

GT = {
    "images": [{"id": 1, "width": 64, "height": 48, "file_name": "a.png"}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [4, 4, 20, 10],
            "area": 200,
            "iscrowd": 0,
            "segmentation": [[4, 4, 24, 4, 24, 14, 4, 14]],
        }
    ],
    "categories": [{"id": 1, "name": "thing"}],
}
DET = {"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "score": 0.9}


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _dets(**change: object) -> bytes:
    """One detection, with ``change`` applied (a value None removes the key)."""
    det = {**DET, **change}
    return _json([{k: v for k, v in det.items() if v is not None}])


def _dataset(fmt: str, damage):
    """A writer for ``files``: a two-image dataset in ``fmt`` (COCO, YOLO or VOC) written with the
    project's own writer into the case's folder, then ``damage(folder)`` applied to it."""

    def write(path: Path) -> None:
        import numpy as np

        from detseg.data.formats import coco, voc, yolo
        from detseg.data.types import DetectionRecord

        image = np.full((48, 64, 3), 90, np.uint8)
        samples = [
            (DetectionRecord(i + 1, f"img{i}.png", 48, 64, [[4, 4, 30, 20]], [0]), image)
            for i in range(2)
        ]
        if fmt == "yolo":
            yolo.write(path, samples, ["cat"])
        elif fmt == "voc":
            voc.write(path, samples, ["cat"])
        else:
            coco.write(path / "ann.json", samples, ["cat"])
        damage(path)

    return write


def _replace(relative: str, text: str):
    return lambda folder: (folder / relative).write_text(text)


GOOD = {"gt.json": _json(GT), "pred.json": _dets()}
PNG_64x48 = png_bytes(48, 64)  # the size of GT's image
EVAL = ["eval", "--gt", "{tmp}/gt.json", "--pred", "{tmp}/pred.json"]
SEGM = [*EVAL, "--iou-type", "segm"]
D = "detseg"

CORE_CASES = [
    # detseg eval
    Case("eval-gt-missing", D, EVAL, "{tmp}/gt.json", {"pred.json": _dets()}),
    Case("eval-pred-missing", D, EVAL, "{tmp}/pred.json", {"gt.json": _json(GT)}),
    Case("eval-gt-folder", D, EVAL, "{tmp}/gt.json", {**GOOD, "gt.json": "empty folder"}),
    Case("eval-gt-empty", D, EVAL, "{tmp}/gt.json", {**GOOD, "gt.json": "empty"}),
    Case("eval-gt-binary", D, EVAL, "{tmp}/gt.json", {**GOOD, "gt.json": "binary"}),
    Case("eval-gt-truncated", D, EVAL, "{tmp}/gt.json", {**GOOD, "gt.json": _json(GT)[:50]}),
    Case("eval-gt-a-list", D, EVAL, ["{tmp}/gt.json", "JSON object"], {**GOOD, "gt.json": b"[]"}),
    Case(
        "eval-gt-no-images",
        D,
        EVAL,
        ["{tmp}/gt.json", "'images'"],
        {**GOOD, "gt.json": _json({"annotations": [], "categories": []})},
    ),
    Case(
        "eval-gt-images-not-list",
        D,
        EVAL,
        ["{tmp}/gt.json", "'images'"],
        {**GOOD, "gt.json": _json({**GT, "images": {"id": 1}})},
    ),
    Case(
        "eval-gt-bad-box",
        D,
        EVAL,
        ["{tmp}/gt.json", "annotation 0", "bbox"],
        {**GOOD, "gt.json": _json({**GT, "annotations": [{**GT["annotations"][0], "bbox": [1]}]})},
    ),
    Case(
        "eval-pred-an-object",
        D,
        EVAL,
        ["{tmp}/pred.json", "JSON list"],
        {**GOOD, "pred.json": b"{}"},
    ),
    Case(
        "eval-pred-box-3-numbers",
        D,
        EVAL,
        ["{tmp}/pred.json", "detection 0", "bbox"],
        {**GOOD, "pred.json": _dets(bbox=[1, 2, 3])},
    ),
    Case(
        "eval-pred-box-text",
        D,
        EVAL,
        ["{tmp}/pred.json", "detection 0", "bbox"],
        {**GOOD, "pred.json": _dets(bbox=["a", 2, 3, 4])},
    ),
    Case(
        "eval-pred-no-score",
        D,
        EVAL,
        ["{tmp}/pred.json", "detection 0", "score"],
        {**GOOD, "pred.json": _dets(score=None)},
    ),
    Case(
        "eval-pred-nan-score",
        D,
        EVAL,
        ["{tmp}/pred.json", "detection 0", "score"],
        {
            **GOOD,
            "pred.json": b'[{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": NaN}]',
        },
    ),
    Case(
        "eval-pred-unknown-image",
        D,
        EVAL,
        ["{tmp}/pred.json", "detection 0", "image_id"],
        {**GOOD, "pred.json": _dets(image_id=7)},
    ),
    Case(
        "eval-segm-malformed-rle",
        D,
        SEGM,
        ["{tmp}/pred.json: detection 0 has a bad 'segmentation'", "'size' must be [height, width]"],
        {**GOOD, "pred.json": _dets(bbox=None, segmentation={"size": [64], "counts": 5})},
    ),
    Case(
        "eval-segm-rle-wrong-size",
        D,
        SEGM,
        ["{tmp}/pred.json", "detection 0", "is [10, 10] but the image is [48, 64]"],
        {**GOOD, "pred.json": _dets(bbox=None, segmentation={"size": [10, 10], "counts": "0`1"})},
    ),
    Case(
        "eval-segm-polygon-odd",
        D,
        SEGM,
        ["{tmp}/pred.json", "detection 0", "segmentation"],
        {**GOOD, "pred.json": _dets(bbox=None, segmentation=[[1, 2, 3]])},
    ),
    Case(
        "eval-segm-gt-no-height",
        D,
        SEGM,
        ["{tmp}/gt.json", "height"],
        {**GOOD, "gt.json": _json({**GT, "images": [{"id": 1, "width": 64}]})},
    ),
    Case("eval-unknown-iou-type", D, [*EVAL, "--iou-type", "keypoints"], "--iou-type", GOOD),
    Case("eval-no-gt-flag", D, ["eval", "--pred", "{tmp}/pred.json"], "--gt", GOOD),
    # detseg data make
    Case(
        "make-unknown-recipe", D, ["data", "make", "--recipe", "nope", "--out", "{tmp}/o"], "nope"
    ),
    Case(
        "make-out-is-a-file",
        D,
        ["data", "make", "--recipe", "shapes", "--out", "{tmp}/o", "--num-images", "2"],
        "{tmp}/o",
        {"o": "text"},
    ),
    Case(
        "make-zero-images",
        D,
        ["data", "make", "--recipe", "shapes", "--out", "{tmp}/o", "--num-images", "0"],
        "--num-images",
    ),
    Case(
        "make-negative-images",
        D,
        ["data", "make", "--recipe", "shapes", "--out", "{tmp}/o", "--num-images", "-3"],
        "--num-images",
    ),
    Case("make-no-recipe", D, ["data", "make", "--out", "{tmp}/o"], "--recipe"),
    # detseg data validate / convert / show
    Case(
        "validate-missing",
        D,
        ["data", "validate", "{tmp}/none.json", "--format", "coco"],
        "{tmp}/none.json",
    ),
    Case(
        "validate-unknown-format",
        D,
        ["data", "validate", "{tmp}/d", "--format", "kitti"],
        "kitti",
        {"d": "empty folder"},
    ),
    Case(
        "convert-unknown-format",
        D,
        ["data", "convert", "--from", "coco", "--to", "pascal", "{tmp}/gt.json", "{tmp}/o"],
        "pascal",
        {"gt.json": _json(GT)},
    ),
    Case(
        "convert-missing-source",
        D,
        ["data", "convert", "--from", "coco", "--to", "yolo", "{tmp}/gt.json", "{tmp}/o"],
        "{tmp}/gt.json",
    ),
    Case(
        "convert-truncated-json",
        D,
        ["data", "convert", "--from", "coco", "--to", "yolo", "{tmp}/gt.json", "{tmp}/o"],
        "{tmp}/gt.json",
        {"gt.json": _json(GT)[:70]},
    ),
    Case(
        "convert-binary-json",
        D,
        ["data", "convert", "--from", "coco", "--to", "yolo", "{tmp}/gt.json", "{tmp}/o"],
        "{tmp}/gt.json",
        {"gt.json": "binary"},
    ),
    Case(
        "convert-images-not-list",
        D,
        ["data", "convert", "--from", "coco", "--to", "yolo", "{tmp}/gt.json", "{tmp}/o"],
        "{tmp}/gt.json",
        {"gt.json": _json({**GT, "images": 5})},
    ),
    Case(
        "convert-yolo-empty-folder",
        D,
        ["data", "convert", "--from", "voc", "--to", "yolo", "{tmp}/voc", "{tmp}/o"],
        "{tmp}/voc",
        {"voc": "empty folder"},
    ),
    Case(
        "show-zero-images",
        D,
        ["data", "show", "{tmp}/gt.json", "--format", "coco", "--num", "0"],
        "--num",
        {"gt.json": _json(GT), "a.png": "png"},
    ),
    Case(
        "show-truncated-image",
        D,
        ["data", "show", "{tmp}/gt.json", "--format", "coco", "--out", "{tmp}/g.png"],
        "{tmp}/a.png",
        {"gt.json": _json(GT), "a.png": "truncated png"},
    ),
    Case(
        "show-text-image",
        D,
        ["data", "show", "{tmp}/gt.json", "--format", "coco", "--out", "{tmp}/g.png"],
        "{tmp}/a.png",
        {"gt.json": _json(GT), "a.png": "text"},
    ),
    Case(
        "show-yolo-yaml-garbage",
        D,
        ["data", "show", "{tmp}/data.yaml", "--format", "yolo", "--out", "{tmp}/g.png"],
        "{tmp}/data.yaml",
        {"data.yaml": b"names: [unclosed\n  - : :\n"},
    ),
    Case(
        "show-out-under-a-file",
        D,
        ["data", "show", "{tmp}/gt.json", "--format", "coco", "--out", "{tmp}/f/g.png"],
        ["--out", "{tmp}/f"],
        {"gt.json": _json(GT), "a.png": PNG_64x48, "f": "text"},
    ),
    Case(
        "show-image-of-another-size",
        D,
        ["data", "show", "{tmp}/gt.json", "--format", "coco", "--out", "{tmp}/g.png"],
        ["{tmp}/a.png", "16x16", "64x48"],
        {"gt.json": _json(GT), "a.png": "png"},
    ),
    Case(
        "convert-dst-under-a-file",
        D,
        ["data", "convert", "--from", "coco", "--to", "yolo", "{tmp}/gt.json", "{tmp}/f/o"],
        "{tmp}/f",
        {"gt.json": _json(GT), "a.png": "png", "f": "text"},
    ),
    Case(
        "make-out-under-a-file",
        D,
        ["data", "make", "--recipe", "shapes", "--out", "{tmp}/f/o", "--num-images", "2"],
        ["--out", "{tmp}/f"],
        {"f": "text"},
    ),
    Case(
        "eval-gt-unreadable",
        D,
        EVAL,
        "{tmp}/gt.json",
        GOOD,
        unreadable=["gt.json"],
    ),
    Case(
        "convert-yolo-label-3-numbers",
        D,
        ["data", "convert", "--from", "yolo", "--to", "coco", "{tmp}/y/data.yaml", "{tmp}/o.json"],
        ["img0.txt", ":1"],
        {"y": _dataset("yolo", _replace("train/labels/img0.txt", "0 0.5 0.5\n"))},
    ),
    Case(
        "convert-yolo-class-out-of-range",
        D,
        ["data", "convert", "--from", "yolo", "--to", "coco", "{tmp}/y/data.yaml", "{tmp}/o.json"],
        ["img1.txt", ":2"],
        {
            "y": _dataset(
                "yolo", _replace("train/labels/img1.txt", "0 .5 .5 .1 .1\n4 .5 .5 .1 .1\n")
            )
        },
    ),
    Case(
        "convert-truncated-second-image",
        D,
        ["data", "convert", "--from", "coco", "--to", "yolo", "{tmp}/c/ann.json", "{tmp}/o"],
        ["img1.png"],
        {"c": _dataset("coco", lambda f: (f / "img1.png").write_bytes(png_bytes()[:60]))},
    ),
    Case(
        "convert-voc-broken-xml",
        D,
        ["data", "convert", "--from", "voc", "--to", "coco", "{tmp}/v", "{tmp}/o.json"],
        ["img0.xml"],
        {"v": _dataset("voc", _replace("Annotations/img0.xml", "<annotation><object>"))},
    ),
    Case(
        "convert-voc-xmin-after-xmax",
        D,
        ["data", "convert", "--from", "voc", "--to", "coco", "{tmp}/v", "{tmp}/o.json"],
        ["img1.xml", "box 0", "inverted"],
        {
            "v": _dataset(
                "voc",
                lambda f: (f / "Annotations" / "img1.xml").write_text(
                    (f / "Annotations" / "img1.xml")
                    .read_text()
                    .replace("<xmin>5</xmin>", "<xmin>50</xmin>")
                ),
            )
        },
    ),
    Case(
        "convert-coco-bbox-2-numbers",
        D,
        ["data", "convert", "--from", "coco", "--to", "yolo", "{tmp}/c/ann.json", "{tmp}/o"],
        ["{tmp}/c/ann.json", "bbox"],
        {
            "c": _dataset(
                "coco",
                lambda f: (f / "ann.json").write_text(
                    (f / "ann.json").read_text().replace('"bbox": [4', '"bbox": [4, 4], "x": [4')
                ),
            )
        },
    ),
    # detseg tour / bench / the command itself
    Case(
        "tour-unknown-step",
        D,
        ["tour", "--only", "no-such-step", "--out", "{tmp}/t"],
        "no-such-step",
    ),
    Case(
        "tour-out-is-a-file", D, ["tour", "--out", "{tmp}/t"], ["--out", "{tmp}/t"], {"t": "text"}
    ),
    Case(
        "bench-out-is-a-file",
        D,
        ["bench", "run", "--case", "boxes-iou", "--out", "{tmp}/b"],
        ["--out", "{tmp}/b"],
        {"b": "text"},
    ),
    Case("bench-unknown-case", D, ["bench", "run", "--case", "nope", "--out", "{tmp}/b"], "nope"),
    Case(
        "bench-render-missing-readme",
        D,
        ["bench", "render", "--readme", "{tmp}/README.md", "--results", "{tmp}/r"],
        "{tmp}/README.md",
        {"r": "empty folder"},
    ),
    Case("unknown-command", D, ["frobnicate"], "frobnicate"),
    Case("unknown-flag", D, ["eval", "--gt", "a", "--pred", "b", "--colour"], "--colour"),
]


def _example_cases() -> list[Case]:
    cases = []
    for path in sorted(ROOT.glob("0*_*/tests/bad_input_cases.py")):
        name = f"bad_input_cases_{path.parents[1].name}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.extend(module.CASES)
    return cases


ALL_CASES = CORE_CASES + _example_cases()

# cases that fail today, each a bug being fixed (strict: a fixed one must leave this set)
KNOWN_BUGS: set[str] = set()
PARAMS = [
    pytest.param(
        case,
        id=case.id,
        marks=[pytest.mark.xfail(strict=True, reason="bug")] if case.id in KNOWN_BUGS else [],
    )
    for case in ALL_CASES
]


def test_case_ids_are_unique_and_the_suite_is_large():
    ids = [case.id for case in ALL_CASES]
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})
    assert len(ALL_CASES) >= 60


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder below ``folder``: kind, size, mtime and content hash."""
    state = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        if path.is_file():
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:  # an unreadable case's file: size and mtime still tell
                digest = None
            state[str(path.relative_to(folder))] = ("file", stat.st_size, stat.st_mtime_ns, digest)
        else:
            state[str(path.relative_to(folder))] = ("dir",)
    return state


def _run(case: Case, argv: list[str]) -> int:
    if case.entry == "detseg":
        from detseg.cli import main

        with pytest.raises(SystemExit) as info:
            main(argv)
        return info.value.code
    from detseg.errors import run_cli
    from detseg.scripts import load_script

    script = ROOT / case.entry
    assert script.is_file(), f"no script {case.entry}"
    # the script's __main__ is what a user runs; the test runs the same call in-process
    assert "sys.exit(run_cli(main))" in script.read_text(encoding="utf-8")
    module = load_script(script.parent, script.stem)
    return run_cli(module.main, argv)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-input-data")


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input(case, tmp_path, data_cache, monkeypatch, capsys):
    if case.unreadable and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    for relative, content in case.files.items():
        make_file(tmp_path / relative, content)
    for relative in case.unreadable:
        (tmp_path / relative).chmod(0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DETSEG_DATA", str(data_cache))
    monkeypatch.setenv("DETSEG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DETSEG_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    before = _snapshot(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]
    capsys.readouterr()

    code = _run(case, argv)

    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{err}"
    [line] = lines
    assert line.startswith("error: "), line
    for text in case.expected():
        assert text.replace("{tmp}", str(tmp_path)) in line, (text, line)
    assert "; " in line, f"no fix after '; ': {line}"
    assert code == 2, (code, line)
    after = _snapshot(tmp_path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the run created, changed or removed {changed}"


def test_makers_make_what_they_say(tmp_path):
    import torch

    from detseg.data.imageio import read_image
    from detseg.engine.checkpoint import load_checkpoint
    from detseg.errors import UserError

    make_file(tmp_path / "a.png", png_bytes(5, 7))
    image = read_image(tmp_path / "a.png")
    assert image.shape == (5, 7, 3) and image[4, 6].tolist() == [90, 60, 128]
    make_file(tmp_path / "bad.png", "truncated png")
    with pytest.raises(UserError):
        read_image(tmp_path / "bad.png")
    make_file(tmp_path / "f.pt", "foreign checkpoint")
    assert set(load_checkpoint(tmp_path / "f.pt")) == {"weight", "bias"}
    for kind, fragment in [
        ("unsafe checkpoint", "argparse.Namespace"),
        ("truncated checkpoint", "corrupt or truncated"),
    ]:
        make_file(tmp_path / "x.pt", kind)
        with pytest.raises(UserError, match=fragment):
            load_checkpoint(tmp_path / "x.pt")
    assert torch.load(tmp_path / "f.pt", weights_only=True)["weight"].shape == (2, 3)
    make_file(tmp_path / "d" / "e", "empty folder")
    assert (tmp_path / "d" / "e").is_dir() and not any((tmp_path / "d" / "e").iterdir())
    with pytest.raises(ValueError, match="unknown bad-file kind"):
        make_file(tmp_path / "z", "zip bomb")
