"""TensorFlow next to torchvision: the core's import order keeps the interpreter alive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.tf
def test_tensorflow_then_torchvision_does_not_crash():
    pytest.importorskip("tensorflow")
    code = (
        "from detseg.tf_import import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "import torchvision\n"
        "print(tf.constant(2).numpy() * 21, torchvision.ops.box_area.__name__)\n"
        "threading = tf.config.threading\n"
        "print(threading.get_intra_op_parallelism_threads(), "
        "threading.get_inter_op_parallelism_threads())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["DETSEG_TF_THREADS"] = "3"  # capped on the first import (TensorFlow's default is 0: all)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["42", "box_area", "3", "3"]
