"""This folder's test setup: the shared example fixtures of :mod:`detseg.testing`.

``script("train")`` imports this folder's ``train.py`` by path (scripts share their names across
folders); the model / data modules (``yolov7``, ``yolov7_loss`` ...) have unique names and import
normally. Every test runs in smoke mode with one torch thread, data generated once per session and
runs inside its ``tmp_path``.
"""

from detseg.testing import example_fixtures

_fixtures = example_fixtures(__file__)
script = _fixtures.script
shared_data = _fixtures.shared_data
example_env = _fixtures.env
