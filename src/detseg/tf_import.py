"""The one way the core imports TensorFlow: lazily, and after torchvision.

With TensorFlow 2.21 and torch 2.14 / torchvision 0.29 in one environment, ``import tensorflow``
followed by ``import torchvision`` crashes the interpreter (a segmentation fault while torchvision's
import reaches triton through ``torch._dynamo``); the other order works. A lesson may use both (the
R-CNN lessons train in Keras and compare with ``torchvision.ops``), so every TensorFlow import in
``detseg`` goes through :func:`import_tensorflow`, which imports torchvision first when it is
installed. In your own scripts that use both, import ``torchvision`` before ``tensorflow``.

``DETSEG_TF_THREADS=N`` (the test suite sets 1: one pytest worker per core) caps TensorFlow's CPU
threads, intra- and inter-op, when this first imports it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` safely next to torchvision, with TensorFlow's C++ info logs silenced
    (and its threads capped by ``DETSEG_TF_THREADS``, when set, on the first import)."""
    first = "tensorflow" not in sys.modules
    if first:
        if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is not None:
            import torchvision  # noqa: F401  (must precede tensorflow, see the module docstring)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    threads = os.environ.get("DETSEG_TF_THREADS", "")
    if first and threads.isdigit() and int(threads) > 0:
        try:
            tensorflow.config.threading.set_intra_op_parallelism_threads(int(threads))
            tensorflow.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:  # the runtime already started in this process: leave it as it is
            pass
    return tensorflow
