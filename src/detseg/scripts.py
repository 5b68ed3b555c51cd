"""Import an example folder's script by path, under a name unique across the repository.

Every example folder has its own ``train.py``, ``predict.py``, ``export.py`` and ``tour.py``; a plain
``import train`` in one process (a pytest worker, ``detseg tour``) gets whichever folder came first on
``sys.path``. :func:`load_script` imports ``<folder>/<name>.py`` as ``<folder>__<name>`` instead, with
the folder on ``sys.path`` so the script's own uniquely named modules import normally.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(folder: str | Path, name: str) -> ModuleType:
    """Import ``folder/name.py`` once as the module ``<folder name>__<name>`` and return it."""
    folder = Path(folder).resolve()
    module_name = f"{folder.name}__{name}"
    if module_name not in sys.modules:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        spec = importlib.util.spec_from_file_location(module_name, folder / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {folder / f'{name}.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]
