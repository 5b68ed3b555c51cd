"""train.py --tracker wandb, offline (no account, no network): the run folder W&B writes, and the
metrics read back from its ``.wandb`` file equal the ones train.py returned."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from detseg.engine.checkpoint import load_checkpoint

SHORT = ["--num-images", "12", "--image-size", "64", "--batch-size", "4", "--workers", "0",
         "--device", "cpu", "--seed", "3"]  # fmt: skip


def read_wandb_records(path: Path) -> list:
    """The records of a ``run-<id>.wandb`` file: a 7-byte W&B header, then LevelDB's log format
    (32 KiB blocks; each chunk: crc32c, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # too short for a chunk header: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending = (
            data[pos + 7 : pos + 7 + length]
            if kind in (1, 2)
            else pending + data[pos + 7 : pos + 7 + length]
        )
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_run_folder_holds_the_epoch_metrics(script, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "wb"
    result = script("train").main([*SHORT, "--epochs", "2", "--output-dir", str(out),
                                   "--tracker", "wandb"])  # fmt: skip
    run_id = (out / "wandb-run-id.txt").read_text().strip()
    folders = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 1, sorted((out / "wandb").iterdir())
    records = read_wandb_records(folders[0] / f"run-{run_id}.wandb")
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs[0].run_id == run_id and runs[0].project == "detseg"
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    assert config["variant"] == "tiny" and config["classes"] == ["ball", "cup", "lotion"]
    history = [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["epoch"] for h in history] == [1, 2]
    for logged, epoch in zip(history, result["history"]):
        assert logged["eval/map50"] == epoch["eval"]["map50"]
        assert logged["train/loss"] == epoch["train"]["loss"]
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
