"""yolov7_checkpoint.py: a file built with the structure of the authors' yolov7-tiny.pt is read
without importing its classes, mapped by order and shape; foreign code is refused."""

from __future__ import annotations

import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from yolov7 import build_model
from yolov7_checkpoint import (
    ForeignObject,
    load_authors_checkpoint,
    load_start_weights,
    read_foreign_checkpoint,
)

from detseg.engine.checkpoint import load_checkpoint
from detseg.errors import UserError

# the authors' class of each of our layer classes (their models/common.py, models/yolo.py)
THEIR_CLASSES = {
    "Conv": "models.common", "RepConv": "models.common", "SPPCSPC": "models.common",
    "MaxPool": "models.common", "Concat": "models.common", "Upsample": "torch.nn.modules.upsampling",
    "ImplicitA": "models.common", "ImplicitM": "models.common", "IDetect": "models.yolo",
}  # fmt: skip
RAN = []  # a foreign __setstate__ would append here


def authors_like_file(tmp_path: Path, num_classes: int, seed: int) -> tuple[Path, nn.Module]:
    """Save a checkpoint shaped like the authors' release: {'epoch', 'best_fitness' (numpy),
    'model': models.yolo.Model holding a Sequential 'model' of models.common.* layers (half
    precision), IDetect with grid-unit 'anchors' and an 'anchor_grid' buffer, 'optimizer': None}.
    The foreign classes exist only while saving."""
    torch.manual_seed(seed)
    ours = build_model("tiny", num_classes)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    donor = build_model("tiny", num_classes)
    donor.load_state_dict(ours.state_dict())
    fake = {name: types.ModuleType(name) for name in ("models", "models.common", "models.yolo")}

    def foreign(name: str, module: str) -> type:
        def setstate(self, state):  # would run if the loader used the real class
            RAN.append(name)
            self.__dict__.update(state)

        cls = type(name, (nn.Module,), {"__module__": module, "__setstate__": setstate})
        if module in fake:
            setattr(fake[module], name, cls)
        return cls

    classes = {
        name: foreign(name, module) for name, module in THEIR_CLASSES.items() if module in fake
    }
    model_cls = foreign("Model", "models.yolo")
    head = donor.layers[-1]
    head.register_buffer("anchor_grid", head.anchors.clone().view(3, 1, -1, 1, 1, 2))
    with torch.no_grad():
        head.anchors /= torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
    for module in donor.modules():
        if type(module).__name__ in classes:
            module.__class__ = classes[type(module).__name__]
        elif isinstance(module, nn.Upsample):
            module.__class__ = nn.Upsample  # theirs is torch's own
    wrapper = nn.Module()
    wrapper.__class__ = model_cls
    wrapper.model = nn.Sequential(*donor.layers)
    checkpoint = {
        "epoch": -1, "best_fitness": np.float64(0.5), "training_results": None,
        "model": wrapper.half(), "optimizer": None, "wandb_id": None,
    }  # fmt: skip
    path = tmp_path / "yolov7-tiny.pt"
    sys.modules.update(fake)
    try:
        torch.save(checkpoint, path)
    finally:
        for name in fake:
            sys.modules.pop(name, None)
    return path, ours


def test_authors_structure_loads_without_their_code(tmp_path):
    path, ours = authors_like_file(tmp_path, 80, seed=0)
    assert "models" not in sys.modules
    with pytest.raises(UserError, match="object, not only tensors"):
        load_checkpoint(path)  # the engine's safe loader (weights_only=True) refuses it...
    raw = read_foreign_checkpoint(path)  # ...ours reads it, as inert records
    assert (
        isinstance(raw["model"], ForeignObject) and raw["model"].foreign_name == "models.yolo.Model"
    )
    model = build_model("tiny", 80)
    report = load_start_weights(model, path)
    assert report["source"] == "authors" and report["skipped"] == []
    assert (
        RAN == [] and "models" not in sys.modules
    )  # no foreign __setstate__ ran, nothing imported
    for (name, mine), theirs in zip(model.state_dict().items(), ours.state_dict().values()):
        if name.endswith("num_batches_tracked"):
            continue
        expected = theirs.half().float()  # the file is half precision, as the authors' releases
        torch.testing.assert_close(mine, expected, atol=0, rtol=0, msg=name)


def test_other_number_of_classes_keeps_our_head(tmp_path):
    path, ours = authors_like_file(tmp_path, 80, seed=1)
    model = build_model("tiny", 3)
    head_before = model.head.m[0].weight.clone()
    report = load_authors_checkpoint(model, path)
    # per level: the 1x1 conv weight and bias, and ImplicitM, have 3 x 85 channels instead of 3 x 8
    assert len(report["skipped"]) == 9 and all("layers.77." in n for n in report["skipped"])
    torch.testing.assert_close(model.head.m[0].weight, head_before)
    torch.testing.assert_close(
        model.layers[0].conv.weight, ours.layers[0].conv.weight.half().float()
    )


def test_other_variant_is_refused(tmp_path):
    path, _ = authors_like_file(tmp_path, 80, seed=2)
    with pytest.raises(UserError, match="weight tensors, but this model has"):
        load_authors_checkpoint(build_model("base", 80), path)


def test_foreign_code_in_the_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("__import__('os').getpid()",))

    buffer = io.BytesIO()
    pickle.dump({"model": Evil()}, buffer, protocol=2)
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", buffer.getvalue())
    with pytest.raises(UserError, match=r"refused global (__builtin__|builtins)\.eval"):
        read_foreign_checkpoint(path)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch zip checkpoint"):
        read_foreign_checkpoint(tmp_path / "text.pt")
