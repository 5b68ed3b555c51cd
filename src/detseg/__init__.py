"""detseg: the shared, tested core of the 'Beyond Image Classification' examples.

Submodules are imported on demand (``import detseg.boxes``); importing ``detseg`` itself is cheap and
pulls in neither PyTorch nor TensorFlow.
"""

__version__ = "0.1.0"
