"""edgeship: ship image classifiers to edge devices.

train (TensorFlow) -> export (tfmot QAT + TFLite) -> runtime (LiteRT, no TensorFlow).
Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
