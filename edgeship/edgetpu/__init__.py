"""Edge TPU knowledge, TensorFlow-free: which ops the compiler maps, the compiler wrapper, and
the checks a device needs before its first run."""

from edgeship.edgetpu.mapping import MappingReport, compiled_mapping, predict_mapping

__all__ = ["MappingReport", "compiled_mapping", "predict_mapping"]
