"""The device side: LiteRT, numpy and Pillow only. Never TensorFlow.

Example:
    >>> from edgeship.runtime import preprocess, Manifest  # no TensorFlow is imported
    >>> from edgeship.runtime import load_model, is_full_integer
"""

from edgeship.runtime.bench import BenchConfig, benchmark, benchmark_models
from edgeship.runtime.bench_compare import compare_results, load_result, parse_litert_log
from edgeship.runtime.bench_matrix import MatrixConfig, bench_matrix
from edgeship.runtime.bench_report import write_bench
from edgeship.runtime.device_info import device_identity
from edgeship.runtime.classify import Class, Prediction, get_classes, predict
from edgeship.runtime.dataset import Dataset, folder_dataset, run_dataset
from edgeship.runtime.evaluation import evaluate, evaluate_to_file, write_report
from edgeship.runtime.gate_report import GateReports, gate_summary, junit_xml, write_gate_reports
from edgeship.runtime.graph import is_full_integer, read_graph
from edgeship.runtime.image import RESIZE_METHODS, load_image, normalize, preprocess, resize
from edgeship.runtime.inspection import inspect_model
from edgeship.runtime.labels import read_labels
from edgeship.runtime.manifest import Manifest, embed, read_embedded
from edgeship.runtime.device import make_interpreter
from edgeship.runtime.model import Model, load_model
from edgeship.runtime.validation import ValidationGate, mcnemar_exact_p, paired_difference_ci, validate

__all__ = [
    "RESIZE_METHODS",
    "BenchConfig",
    "Class",
    "Dataset",
    "GateReports",
    "Manifest",
    "MatrixConfig",
    "Model",
    "Prediction",
    "ValidationGate",
    "bench_matrix",
    "benchmark",
    "benchmark_models",
    "compare_results",
    "device_identity",
    "embed",
    "evaluate",
    "evaluate_to_file",
    "folder_dataset",
    "gate_summary",
    "get_classes",
    "inspect_model",
    "is_full_integer",
    "junit_xml",
    "load_image",
    "load_result",
    "load_model",
    "make_interpreter",
    "mcnemar_exact_p",
    "normalize",
    "paired_difference_ci",
    "parse_litert_log",
    "predict",
    "preprocess",
    "read_embedded",
    "read_graph",
    "read_labels",
    "resize",
    "run_dataset",
    "validate",
    "write_bench",
    "write_gate_reports",
    "write_report",
]
