"""Weights from a Keras HDF5 file into a model edgeship built, reading nothing but arrays.

A run directory's ``model.h5`` and ``checkpoints/best.h5`` come from whoever made the run.
Keras' ``load_model`` rebuilds the architecture from the file, and for a ``Lambda`` layer that
means running the Python bytecode stored in it; even ``load_weights`` reads each array at the
size the file declares before comparing it with the model. Here the architecture always
comes from edgeship's own builders (from the recorded, checked ``config.json``), and each
array is read only after its shape and type match the variable it is meant for, so a file
costs at most the model's own size in memory and runs nothing.

Example:
    >>> from edgeship.train.config import load_run_config
    >>> from edgeship.train.model import build_model
    >>> model = build_model(load_run_config("runs/flowers"), num_classes=4, pretrained=False)
    >>> load_h5_weights(model, "runs/flowers/model.h5")
"""

from __future__ import annotations

import json
import os

import numpy as np

from edgeship.errors import ConfigError
from edgeship.runtime.files import display_path

__all__ = ["load_h5_weights"]

_MAX_LAYERS = 10_000  # far beyond any backbone edgeship builds (EfficientNet-Lite0: ~250)
_MAX_CONFIG_CHARS = 16 << 20  # MobileNetV2's recorded architecture is about 100 KB


_RUN_HINT = "It must be the file edgeship train wrote for the recorded config: train the run again, or restore it."


def load_h5_weights(model, path: str | os.PathLike, hint: str = _RUN_HINT) -> None:
    """Sets every weight of ``model`` from the Keras HDF5 file ``path`` (a whole model saved
    with ``model.save`` or weights saved with ``save_weights``).

    Layers are paired in order, as Keras pairs them, and weights within a layer by name.
    ``hint`` ends the error message: what the user can do about a file that does not fit.

    Raises:
        ConfigError: the file is not a Keras HDF5 file of this architecture, or holds links,
            external or virtual storage, or arrays of another shape or type.
    """
    import h5py

    name = display_path(path)
    try:
        with h5py.File(os.fspath(path), "r") as file:
            _check_layer_classes(file, model)
            group = _child(file, "model_weights", name) if "model_weights" in file else file
            saved = [(layer, names) for layer, names in _saved_layers(group, name) if names]
            layers = [layer for layer in model.layers if layer.weights]
            if len(saved) != len(layers):
                raise ValueError(f"it holds weights for {len(saved)} layers; this model has {len(layers)}")
            for layer, (saved_name, weight_names) in zip(layers, saved):
                layer.set_weights(_layer_values(layer, _child(group, saved_name, name), weight_names, name))
    except (OSError, KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError, RecursionError) as e:
        raise ConfigError(f"{name} cannot be loaded into {model.name} ({e}). {hint}") from e


def _check_layer_classes(file, model) -> None:
    """Refuses a whole-model file whose recorded architecture has a layer class the rebuilt
    model lacks (``Lambda``, a custom class): it is not a file edgeship wrote, whatever its
    weights. The architecture is read as JSON text, never deserialised."""
    text = file.attrs.get("model_config")
    if text is None:  # weights saved with save_weights carry no architecture
        return
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    if len(text) > _MAX_CONFIG_CHARS:
        raise ValueError(f"its recorded architecture has {len(text)} characters, more than any edgeship model")
    layers = json.loads(text).get("config", {}).get("layers", [])
    known = {type(layer).__name__ for layer in model.layers}
    foreign = [f"{layer.get('class_name')} {layer.get('name')!r}" for layer in layers
               if layer.get("class_name") not in known]
    if foreign:
        raise ValueError(f"it records layers edgeship does not build ({', '.join(foreign[:3])}); none of it was run")


def _text(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def _saved_layers(group, name: str) -> list[tuple[str, list[str]]]:
    layer_names = _text(group.attrs["layer_names"])
    if len(layer_names) > _MAX_LAYERS:
        raise ValueError(f"{len(layer_names)} layers listed, more than any model edgeship builds")
    return [(layer, _text(_child(group, layer, name).attrs["weight_names"])) for layer in layer_names]


def _child(group, key: str, name: str):
    """``group[key]``, refusing soft and external links (which reach into other files)."""
    import h5py

    link = group.get(key, getlink=True)
    if link is None:
        raise KeyError(f"no {key!r} in {name}")
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{key!r} is a {type(link).__name__}, which edgeship does not follow")
    return group[key]


def _layer_values(layer, group, weight_names: list[str], name: str) -> list[np.ndarray]:
    if len(weight_names) != len(layer.weights):
        raise ValueError(f"layer {layer.name!r} has {len(layer.weights)} weights; the file has {len(weight_names)}")
    by_name = {_short(w): w for w in weight_names}
    wanted = [_short(variable.name) for variable in layer.weights]
    # Within a layer, by name where the names agree; else in order, as Keras pairs them: a file
    # written by Keras 3 calls a depthwise kernel "kernel" where tf_keras says "depthwise_kernel".
    keys = [by_name[short] for short in wanted] if set(wanted) == set(by_name) else weight_names
    return [_read_array(_child(group, key, name), tuple(variable.shape), f"{layer.name}/{key}")
            for variable, key in zip(layer.weights, keys)]


def _read_array(dataset, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The dataset's values, read only once its declared shape and type fit the variable."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise ValueError(f"{what} is not an array")
    if dataset.shape != shape:
        raise ValueError(f"{what} has shape {dataset.shape}; the model expects {shape}")
    if dataset.dtype.kind != "f" or dataset.dtype.itemsize > 8:
        raise ValueError(f"{what} holds {dataset.dtype}, not floating-point numbers")
    if dataset.external or dataset.is_virtual:
        raise ValueError(f"{what} keeps its values in other files, which edgeship does not read")
    return np.asarray(dataset[()], dtype=np.float32)


def _short(weight_name: str) -> str:
    """``conv1/kernel:0`` -> ``kernel``: the name a weight has within its layer."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
