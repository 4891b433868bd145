"""Two-phase fine-tuning with checkpoints, resume and a final test-split score.

Phase 1 trains the new head on a frozen backbone (a large learning rate is safe: the
pretrained features cannot be disturbed). Phase 2 unfreezes the top of the backbone at a
10x lower learning rate. Both phases use Adam with cosine decay, early stopping on validation
loss, and keep the best weights seen on validation in ``checkpoints/best.h5``. Each epoch is
backed up (model, optimizer, epoch) so that ``resume=True`` continues where a killed run
stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import ConfigError
from edgeship.runtime.files import atomic_path, atomic_write_json
from edgeship.runtime.metrics import classification_report, report_markdown
from edgeship.train.augment import make_augmenter
from edgeship.runtime.rundir import RunDir
from edgeship.train.config import WEIGHTS_NONE, TrainConfig, load_run_config
from edgeship.train.data import DecodedSplit, load_data, prepare_data
from edgeship.train.model import build_model, describe_weights, set_trainable
from edgeship.train.progress import EpochProgress
from edgeship.train.tfdata import class_weights, make_dataset
from edgeship.train.tfkeras import keras, tf

__all__ = ["TrainResult", "load_float_model", "make_strategy", "predict_probabilities", "train"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_path: Path
    test_accuracy: float
    metrics: dict


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for ``name``.

    ``mirrored`` replicates over all GPUs, or, on a CPU-only host that was split into several
    logical CPU devices, over those. ``multi-worker`` reads the cluster from ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"Unknown strategy {name!r}; expected default, mirrored or multi-worker.")


def load_float_model(run_dir: str | Path) -> keras.Model:
    """The best float Keras model of a finished run."""
    path = RunDir(run_dir).model_path
    if not path.is_file():
        raise ConfigError(f"No {path.name} in {run_dir}: train first (`edgeship train DATA --out {run_dir}`).")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); train the run again.") from e


class _KeepBest(keras.callbacks.Callback):
    """Saves the weights with the lowest validation loss across both phases, atomically.

    Its record (``best.json``) survives a restart, unlike ModelCheckpoint's in-memory best.
    """

    def __init__(self, directory: Path, phase: int):
        super().__init__()
        self.path = directory / "best.h5"
        self.record_path = directory / "best.json"
        self.phase = phase
        self.best = json.loads(self.record_path.read_text())["val_loss"] if self.record_path.exists() else np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_loss")
        if value is None or not value < self.best:
            return
        self.best = float(value)
        with atomic_path(self.path, suffix=".h5") as tmp:
            self.model.save_weights(str(tmp))
        atomic_write_json(self.record_path, {"val_loss": self.best, "phase": self.phase, "epoch": epoch + 1})


def _resolve_config(config: TrainConfig, resume: bool) -> TrainConfig:
    run = RunDir(config.run_dir)
    if resume and run.is_started:
        stored = load_run_config(run.path)
        changed = sorted(k for k, v in config.to_dict().items() if k != "out_dir" and v != getattr(stored, k))
        if changed and config.data_dir:
            logger.warning("Resuming %s with its recorded config; ignoring changed field(s): %s", run.path,
                           ", ".join(changed))
        return stored
    if run.is_started and not resume:
        raise ConfigError(
            f"{run.path} already holds a run. Pass --resume to continue it, or --out to train into a new directory."
        )
    if not config.data_dir:
        raise ConfigError("No data folder given: pass DATA_DIR (one sub-folder per class).")
    return config


def _fit_phase(model, config, data: DecodedSplit, phase: _Phase, train_ds, val_ds, run: RunDir):
    steps = int(np.ceil(len(data.indices["train"]) / config.batch_size))
    epochs = phase.epochs
    schedule = keras.optimizers.schedules.CosineDecay(phase.learning_rate, decay_steps=max(1, epochs * steps),
                                                      alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        weighted_metrics=[],
    )
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run.checkpoints_dir / f"phase{phase.number}")),
        keras.callbacks.EarlyStopping("val_loss", patience=config.patience),
        _KeepBest(run.checkpoints_dir, phase.number),
        EpochProgress(f"phase {phase.number}", epochs, steps),
    ]
    return model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0)


def predict_probabilities(model, data: DecodedSplit, name: str, batch_size: int) -> np.ndarray:
    """Class probabilities of a Keras model for every image of split part ``name``, in the
    split's order (no augmentation)."""
    ds = make_dataset(data.pixels, data.labels, data.indices[name], data.num_classes, batch_size)
    return model.predict(ds.map(lambda x, y: x), verbose=0)


@dataclass(frozen=True)
class _Phase:
    number: int
    epochs: int
    learning_rate: float
    trainable_fraction: float   # share of backbone layers whose weights train


def _phases(config: TrainConfig) -> list[_Phase]:
    # Random features are worth nothing frozen: without pretrained weights, phase 1 trains the
    # whole network (batch norm included) and there is nothing to fine-tune after.
    if config.weights == WEIGHTS_NONE:
        return [_Phase(1, config.epochs, config.learning_rate, 1.0)]
    phases = [_Phase(1, config.epochs, config.learning_rate, 0.0)]
    if config.fine_tune_epochs:
        phases.append(_Phase(2, config.fine_tune_epochs, config.fine_tune_learning_rate, config.fine_tune_fraction))
    return phases


def _datasets(config: TrainConfig, data: DecodedSplit, batch_size: int):
    labels = data.labels[data.indices["train"]]
    weights = class_weights(labels, data.num_classes) if config.class_weights == "balanced" else None
    train_ds = make_dataset(
        data.pixels, data.labels, data.indices["train"], data.num_classes, batch_size,
        training=True, augmenter=make_augmenter(config.augment, seed=config.seed), weights=weights, seed=config.seed,
    )
    return train_ds, make_dataset(data.pixels, data.labels, data.indices["val"], data.num_classes, batch_size)


def _fit(config: TrainConfig, data: DecodedSplit, run: RunDir, resume: bool, strategy) -> keras.Model:
    """Both phases, skipping those a resumed run finished; returns the best model on validation."""
    history = run.read_json(run.history_path) if resume and run.history_path.exists() else {}
    state_path = run.checkpoints_dir / "state.json"
    state = run.read_json(state_path) if resume and state_path.exists() else {"phases_done": 0}
    best_path = run.checkpoints_dir / "best.h5"
    train_ds, val_ds = _datasets(config, data, config.batch_size * strategy.num_replicas_in_sync)
    with strategy.scope():
        model = build_model(config, data.num_classes)
        for phase in _phases(config):
            if phase.number <= state["phases_done"]:
                logger.info("Phase %d finished before; skipping it", phase.number)
                continue
            if best_path.exists():
                model.load_weights(str(best_path))  # phase 2 starts from phase 1's best
            trained = set_trainable(model, phase.trainable_fraction, train_batch_norm=config.weights == WEIGHTS_NONE)
            logger.info("Phase %d: %d epoch(s) at lr %g, %d backbone layer(s) with weights training",
                        phase.number, phase.epochs, phase.learning_rate, trained)
            fit = _fit_phase(model, config, data, phase, train_ds, val_ds, run)
            history[f"phase{phase.number}"] = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
            atomic_write_json(run.history_path, history)
            state["phases_done"] = phase.number
            atomic_write_json(state_path, state)
        if best_path.exists():
            model.load_weights(str(best_path))
    return model


def _score(model, config: TrainConfig, data: DecodedSplit, run: RunDir, strategy, seconds: float) -> dict:
    """Test-split metrics of the float model, written as ``metrics.json`` and ``metrics.md``."""
    test = data.indices["test"]
    predictions = np.argmax(predict_probabilities(model, data, "test", config.batch_size), axis=1) if len(test) else []
    report = classification_report(data.labels[test], np.asarray(predictions, int), data.split.classes)
    best_path = run.checkpoints_dir / "best.json"
    best = run.read_json(best_path) if best_path.exists() else {}
    metrics = {
        "split": "test", "split_digest": data.split.digest, **report,
        **{f"num_{name}": len(data.indices[name]) for name in ("train", "val", "test")},
        "num_skipped": len(data.split.skipped), "skipped": data.split.skipped,
        "best_val_loss": best.get("val_loss"), "best_phase": best.get("phase"), "best_epoch": best.get("epoch"),
        "weights": describe_weights(config),
        "strategy": config.strategy, "num_replicas": int(strategy.num_replicas_in_sync),
        "train_seconds": round(seconds, 1),
    }
    run.write_metrics(metrics, report_markdown(report, f"Float model on the test split ({run.path.name})"))
    return metrics


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Fine-tunes a MobileNet on ``config.data_dir`` and writes the run directory.

    Args:
        config: every option; see :class:`TrainConfig`.
        resume: continue the interrupted run in ``config.run_dir`` (its recorded config and
            split are reused).

    Returns:
        Where the model went and its test-split metrics.

    Raises:
        ConfigError: the run directory already holds a run (without ``resume``), or a value is off.
        DataError: the data folder is unusable; nothing is recorded, so the same command can
            be run again once the data is fixed.
        RunBusyError: another process is training or exporting the same run.

    Example:
        >>> result = train(TrainConfig(data_dir="flowers", image_size=160))  # doctest: +SKIP
        >>> result.test_accuracy                                             # doctest: +SKIP
    """
    config = _resolve_config(config, resume)
    run = RunDir(config.run_dir)
    with run.lock("train"):
        start = time.perf_counter()
        keras.utils.set_random_seed(config.seed)
        strategy = make_strategy(config.strategy)
        data = load_data(run.path, config) if resume and run.is_started else prepare_data(config, run.path)
        run.write_config(config.to_dict())  # from here on the run exists and --resume continues it
        run.write_labels(data.split.classes)
        model = _fit(config, data, run, resume, strategy)
        with atomic_path(run.model_path, suffix=".h5") as tmp:
            model.save(str(tmp), include_optimizer=False)
        metrics = _score(model, config, data, run, strategy, time.perf_counter() - start)
    logger.info(
        "Test accuracy %.2f %% on %d images; %d file(s) skipped; run in %s (%.0f s)",
        100 * metrics["accuracy"], metrics["num_images"], metrics["num_skipped"], run.path, metrics["train_seconds"],
    )
    return TrainResult(run.path, run.model_path, metrics["accuracy"], metrics)
