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
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import ClusterError, ConfigError
from edgeship.runtime.files import atomic_path, atomic_write_json, atomic_write_text
from edgeship.runtime.metrics import classification_report, report_markdown
from edgeship.train.augment import make_augmenter
from edgeship.train.config import TrainConfig
from edgeship.train.data import Dataset, prepare_data
from edgeship.train.model import build_model, set_trainable
from edgeship.train.tfdata import class_weights, make_dataset
from edgeship.train.tfkeras import keras, tf

__all__ = ["TrainResult", "is_chief", "load_float_model", "make_strategy", "predict_classes", "predict_probabilities", "train"]

logger = logging.getLogger(__name__)

MODEL_NAME = "model.h5"


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
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"Unknown strategy {name!r}; expected default, mirrored or multi-worker.")


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG", "")
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    try:
        spec = json.loads(text) if text else None
        if spec is not None:
            workers = spec["cluster"]["worker"]
            task = spec["task"]["type"], int(spec["task"]["index"])
            if task[0] == "worker" and not 0 <= task[1] < len(workers):
                raise ValueError(f"task index {task[1]} names none of the {len(workers)} workers")
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({e}). Set it on each machine, e.g. {example}.") from e
    if spec is None:
        logger.warning("--strategy multi-worker without TF_CONFIG trains on this machine alone.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: the only one, or the cluster's chief
    (the ``chief`` task, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type or task_type == "chief":
        return True
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def _worker_dir(run_dir: Path, resume: bool) -> Path:
    """A scratch run directory for a worker that is not the chief. Resuming, it starts from the
    chief's state (phases done, best weights), so that every worker rebuilds the same model."""
    scratch = Path(tempfile.mkdtemp(prefix="edgeship-worker-"))
    for name in ("history.json", "checkpoints/state.json", "checkpoints/best.json", "checkpoints/best.h5"):
        if resume and (run_dir / name).exists():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / name, scratch / name)
    return scratch


def load_float_model(run_dir: str | Path) -> keras.Model:
    """The best float Keras model of a finished run."""
    path = Path(run_dir) / MODEL_NAME
    if not path.is_file():
        raise ConfigError(f"No {MODEL_NAME} in {run_dir}: train first (`edgeship train DATA --out {run_dir}`).")
    return keras.models.load_model(path, compile=False)


class _Progress(keras.callbacks.Callback):
    """One log line per epoch, and a live step counter on a terminal (stderr, not stdout)."""

    def __init__(self, phase: str, epochs: int, steps: int):
        super().__init__()
        self.phase, self.epochs, self.steps = phase, epochs, steps
        self.live = sys.stderr.isatty()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.live:
            sys.stderr.write(
                f"\r{self.phase} epoch {self.epoch + 1}/{self.epochs} step {batch + 1}/{self.steps} "
                f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f}"
            )
            sys.stderr.flush()

    def on_epoch_end(self, epoch, logs=None):
        if self.live:
            sys.stderr.write("\r\033[K")
        logs = logs or {}
        logger.info(
            "%s epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  (%.0f s)",
            self.phase, epoch + 1, self.epochs, logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
            logs.get("val_loss", float("nan")), logs.get("val_accuracy", float("nan")),
            time.perf_counter() - self.start,
        )


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


def _resolve_config(config: TrainConfig, resume: bool, check_existing: bool = True) -> TrainConfig:
    run_dir = config.run_dir
    saved = run_dir / "config.json"
    if resume and saved.exists():
        stored = TrainConfig(**json.loads(saved.read_text()))
        changed = sorted(k for k, v in config.to_dict().items() if k != "out_dir" and v != getattr(stored, k))
        if changed and config.data_dir:
            logger.warning("Resuming %s with its recorded config; ignoring changed field(s): %s", run_dir, ", ".join(changed))
        return stored.replace(out_dir=str(run_dir))
    if saved.exists() and not resume and check_existing:
        raise ConfigError(
            f"{run_dir} already holds a run. Pass --resume to continue it, or --out to train into a new directory."
        )
    if not config.data_dir:
        raise ConfigError("No data folder given: pass DATA_DIR (one sub-folder per class).")
    return config


def _fit_phase(model, config, data: Dataset, phase: int, epochs: int, lr: float, train_ds, val_ds, run_dir: Path,
               backup_dir: Path):
    steps = int(np.ceil(len(data.indices["train"]) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, epochs * steps), alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        weighted_metrics=[],
    )
    checkpoints = run_dir / "checkpoints"
    callbacks = [
        # Shared by all workers (Keras has the others write beside it and read the chief's).
        keras.callbacks.BackupAndRestore(str(backup_dir / f"phase{phase}")),
        keras.callbacks.EarlyStopping("val_loss", patience=config.patience),
        _KeepBest(checkpoints, phase),
        _Progress(f"phase {phase}", epochs, steps),
    ]
    try:
        return model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0)
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError) as e:
        if config.strategy != "multi-worker":
            raise
        detail = next((line for line in str(e).splitlines() if "aborted" in line.lower()), type(e).__name__)
        raise ClusterError(
            f"Multi-worker training lost a worker in phase {phase} ({detail.strip()}). Restart every worker with "
            f"--resume and the same --out ({config.run_dir}): training continues after the last finished epoch."
        ) from e


def predict_probabilities(model, data: Dataset, name: str, batch_size: int) -> np.ndarray:
    """Class probabilities of a Keras model for every image of split part ``name``, in the
    split's order (no augmentation)."""
    ds = make_dataset(data.pixels, data.labels, data.indices[name], data.num_classes, batch_size)
    return model.predict(ds.map(lambda x, y: x), verbose=0)


def predict_classes(model, data: Dataset, name: str, batch_size: int) -> np.ndarray:
    """Top-1 class of a Keras model for every image of split part ``name`` (no augmentation)."""
    return np.argmax(predict_probabilities(model, data, name, batch_size), axis=1)


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Fine-tunes a MobileNet on ``config.data_dir`` and writes the run directory.

    Args:
        config: every option; see :class:`TrainConfig`.
        resume: continue the interrupted run in ``config.run_dir`` (its recorded config and
            split are reused).

    Returns:
        Where the model went and its test-split metrics.

    Example:
        >>> result = train(TrainConfig(data_dir="flowers", image_size=160))  # doctest: +SKIP
        >>> result.test_accuracy                                             # doctest: +SKIP
    """
    # Multi-worker: the strategy comes first (before any other TensorFlow op); only the chief
    # writes the run directory, the other workers a scratch one, removed at the end.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    config = _resolve_config(config, resume, check_existing=chief)
    run_dir = config.run_dir if chief else _worker_dir(config.run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config.to_dict())
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)

    data = prepare_data(config, run_dir)
    atomic_write_text(run_dir / "labels.txt", "\n".join(data.split.classes) + "\n")

    weights = class_weights(data.labels[data.indices["train"]], data.num_classes) if config.class_weights == "balanced" else None
    batch_size = config.batch_size * strategy.num_replicas_in_sync
    train_ds = make_dataset(
        data.pixels, data.labels, data.indices["train"], data.num_classes, batch_size,
        training=True, augmenter=make_augmenter(config.augment, seed=config.seed), weights=weights, seed=config.seed,
    )
    val_ds = make_dataset(data.pixels, data.labels, data.indices["val"], data.num_classes, batch_size)

    history_path = run_dir / "history.json"
    history = json.loads(history_path.read_text()) if resume and history_path.exists() else {}
    state_path = run_dir / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text()) if resume and state_path.exists() else {"phases_done": 0}
    best_path = run_dir / "checkpoints" / "best.h5"

    with strategy.scope():
        model = build_model(config, data.num_classes)
        from_scratch = config.weights == "none"
        # Random features are worth nothing frozen: without pretrained weights, phase 1 trains
        # the whole network (batch norm included) and there is nothing to fine-tune after.
        phases = [(1, config.epochs, config.learning_rate, 1.0 if from_scratch else 0.0)]
        if config.fine_tune_epochs and not from_scratch:
            phases.append((2, config.fine_tune_epochs, config.fine_tune_learning_rate, config.fine_tune_fraction))
        for phase, epochs, lr, fraction in phases:
            if phase <= state["phases_done"]:
                logger.info("Phase %d finished before; skipping it", phase)
                continue
            if best_path.exists():
                model.load_weights(str(best_path))  # phase 2 starts from phase 1's best
            trained = set_trainable(model, fraction, train_batch_norm=from_scratch)
            logger.info("Phase %d: %d epoch(s) at lr %g, %d backbone layer(s) with weights training",
                        phase, epochs, lr, trained)
            fit = _fit_phase(model, config, data, phase, epochs, lr, train_ds, val_ds, run_dir,
                             config.run_dir / "checkpoints")
            history[f"phase{phase}"] = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
            atomic_write_json(history_path, history)
            state["phases_done"] = phase
            atomic_write_json(state_path, state)

        if best_path.exists():
            model.load_weights(str(best_path))
    with atomic_path(run_dir / MODEL_NAME, suffix=".h5") as tmp:
        model.save(str(tmp), include_optimizer=False)

    predictions = predict_classes(model, data, "test", config.batch_size) if len(data.indices["test"]) else np.array([], int)
    report = classification_report(data.labels[data.indices["test"]], predictions, data.split.classes)
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text()) if (run_dir / "checkpoints" / "best.json").exists() else {}
    metrics = {
        "split": "test",
        "split_digest": data.split.digest,
        **report,
        "num_train": len(data.indices["train"]),
        "num_val": len(data.indices["val"]),
        "num_test": len(data.indices["test"]),
        "num_skipped": len(data.split.skipped),
        "skipped": data.split.skipped,
        "best_val_loss": best.get("val_loss"),
        "best_phase": best.get("phase"),
        "best_epoch": best.get("epoch"),
        "strategy": config.strategy,
        "num_replicas": int(strategy.num_replicas_in_sync),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "metrics.md", report_markdown(report, f"Float model on the test split ({run_dir.name})"))
    logger.info(
        "Test accuracy %.2f %% on %d images; %d file(s) skipped; run in %s (%.0f s)",
        100 * report["accuracy"], report["num_images"], len(data.split.skipped), config.run_dir,
        metrics["train_seconds"],
    )
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
    return TrainResult(config.run_dir, config.run_dir / MODEL_NAME, report["accuracy"], metrics)
