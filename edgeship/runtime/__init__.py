"""The device side: LiteRT, numpy and Pillow only. Never TensorFlow.

Example:
    >>> from edgeship.runtime import preprocess, Manifest  # no TensorFlow is imported
    >>> from edgeship.runtime import load_model, is_full_integer
"""

from edgeship.runtime.bench import BenchConfig, benchmark, benchmark_models
from edgeship.runtime.classify import Class, Prediction, get_classes, predict
from edgeship.runtime.dataset import Dataset, folder_dataset, run_dataset
from edgeship.runtime.evaluation import evaluate, write_report
from edgeship.runtime.graph import is_full_integer, read_graph
from edgeship.runtime.image import RESIZE_METHODS, load_image, normalize, preprocess, resize
from edgeship.runtime.inspection import inspect_model
from edgeship.runtime.labels import read_labels
from edgeship.runtime.manifest import Manifest, embed, read_embedded
from edgeship.runtime.device import make_interpreter
from edgeship.runtime.model import Model, load_model
from edgeship.runtime.validation import ValidationGate, paired_difference_ci, validate

__all__ = [
    "RESIZE_METHODS",
    "BenchConfig",
    "Class",
    "Dataset",
    "Manifest",
    "Model",
    "Prediction",
    "ValidationGate",
    "benchmark",
    "benchmark_models",
    "embed",
    "evaluate",
    "folder_dataset",
    "get_classes",
    "inspect_model",
    "is_full_integer",
    "load_image",
    "load_model",
    "make_interpreter",
    "normalize",
    "paired_difference_ci",
    "predict",
    "preprocess",
    "read_embedded",
    "read_graph",
    "read_labels",
    "resize",
    "run_dataset",
    "validate",
    "write_report",
]
