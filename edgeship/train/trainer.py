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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import ClusterError, ConfigError
from edgeship.runtime.files import atomic_path, atomic_write_json
from edgeship.runtime.metrics import classification_report, report_markdown
from edgeship.train.augment import make_augmenter
from edgeship.runtime.rundir import RunDir
from edgeship.train.config import WEIGHTS_NONE, TrainConfig, load_run_config
from edgeship.train.data import DecodedSplit, load_data, prepare_data
from edgeship.train.h5weights import load_h5_weights
from edgeship.train.model import build_model, describe_weights, set_trainable
from edgeship.train.progress import EpochProgress
from edgeship.train.tfdata import class_weights, make_dataset
from edgeship.train.tfkeras import keras, tf

__all__ = ["TrainResult", "is_chief", "load_float_model", "make_strategy", "predict_probabilities", "train"]

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
    RunDir(run_dir).check_links()
    scratch = Path(tempfile.mkdtemp(prefix="edgeship-worker-"))
    for source in RunDir(run_dir).resume_files:
        if resume and source.exists():
            target = scratch / source.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return scratch


def load_float_model(run_dir: str | Path) -> keras.Model:
    """The best float Keras model of a finished run.

    The network is rebuilt from the recorded config by edgeship's own builders and only the
    weights are read from ``model.h5`` (:func:`load_h5_weights`): a run directory from
    someone else is data, and Keras' ``load_model`` would run the code a ``Lambda`` layer in
    the file carries. The layers train as after the run's last phase, as QAT expects.
    """
    run = RunDir(run_dir)
    if not run.model_path.is_file():
        raise ConfigError(f"No {run.model_path.name} in {run_dir}: train first (`edgeship train DATA --out {run_dir}`).")
    config = load_run_config(run.path)
    model = build_model(config, len(run.read_split().classes), pretrained=False)
    load_h5_weights(model, run.model_path)
    last = _phases(config)[-1]
    set_trainable(model, last.trainable_fraction, train_batch_norm=config.weights == WEIGHTS_NONE)
    return model


class _KeepBest(keras.callbacks.Callback):
    """Saves the weights with the lowest validation loss across both phases, atomically.

    Its record (``best.json``) survives a restart, unlike ModelCheckpoint's in-memory best.
    """

    def __init__(self, run: RunDir, phase: int):
        super().__init__()
        self.path = run.best_weights_path
        self.record_path = run.best_record_path
        self.phase = phase
        record = run.read_json(self.record_path) if self.record_path.exists() else {}
        value = record.get("val_loss")
        self.best = float(value) if isinstance(value, (int, float)) else np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_loss")
        if value is None or not value < self.best:
            return
        self.best = float(value)
        with atomic_path(self.path, suffix=".h5") as tmp:
            self.model.save_weights(str(tmp))
        atomic_write_json(self.record_path, {"val_loss": self.best, "phase": self.phase, "epoch": epoch + 1})


def _resolve_config(config: TrainConfig, resume: bool, check_existing: bool = True) -> TrainConfig:
    run = RunDir(config.run_dir)
    if resume and run.is_started:
        stored = load_run_config(run.path)
        changed = sorted(k for k, v in config.to_dict().items() if k != "out_dir" and v != getattr(stored, k))
        if changed and config.data_dir:
            logger.warning("Resuming %s with its recorded config; ignoring changed field(s): %s", run.path,
                           ", ".join(changed))
        return stored
    if run.is_started and not resume and check_existing:
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
        # Shared by all workers (Keras has the others write beside it and read the chief's).
        keras.callbacks.BackupAndRestore(str(RunDir(config.run_dir).checkpoints_dir / f"phase{phase.number}")),
        keras.callbacks.EarlyStopping("val_loss", patience=config.patience),
        _KeepBest(run, phase.number),
        EpochProgress(f"phase {phase.number}", epochs, steps),
    ]
    try:
        return model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0)
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError) as e:
        if config.strategy != "multi-worker":
            raise
        detail = next((line for line in str(e).splitlines() if "aborted" in line.lower()), type(e).__name__)
        raise ClusterError(
            f"Multi-worker training lost a worker in phase {phase.number} ({detail.strip()}). Restart every worker with "
            f"--resume and the same --out ({config.run_dir}): training continues after the last finished epoch."
        ) from e


def predict_probabilities(model, data: DecodedSplit, name: str, batch_size: int) -> np.ndarray:
    """Class probabilities of a Keras model for every image of split part ``name``, in the
    split's order (no augmentation)."""
    ds = make_dataset(data.pixels, data.labels, data.indices[name], data.num_classes, batch_size,
                      normalization=data.normalization)
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
        normalization=data.normalization, training=True, augmenter=make_augmenter(config.augment, seed=config.seed),
        weights=weights, seed=config.seed,
    )
    return train_ds, make_dataset(data.pixels, data.labels, data.indices["val"], data.num_classes, batch_size,
                                  normalization=data.normalization)


def _fit(config: TrainConfig, data: DecodedSplit, run: RunDir, resume: bool, strategy) -> keras.Model:
    """Both phases, skipping those a resumed run finished; returns the best model on validation."""
    history = run.read_json(run.history_path) if resume and run.history_path.exists() else {}
    state_path = run.state_path
    state = run.read_json(state_path) if resume and state_path.exists() else {"phases_done": 0}
    best_path = run.best_weights_path
    train_ds, val_ds = _datasets(config, data, config.batch_size * strategy.num_replicas_in_sync)
    with strategy.scope():
        model = build_model(config, data.num_classes)
        for phase in _phases(config):
            if phase.number <= state["phases_done"]:
                logger.info("Phase %d finished before; skipping it", phase.number)
                continue
            if best_path.exists():
                load_h5_weights(model, best_path)  # phase 2 starts from phase 1's best
            trained = set_trainable(model, phase.trainable_fraction, train_batch_norm=config.weights == WEIGHTS_NONE)
            logger.info("Phase %d: %d epoch(s) at lr %g, %d backbone layer(s) with weights training",
                        phase.number, phase.epochs, phase.learning_rate, trained)
            fit = _fit_phase(model, config, data, phase, train_ds, val_ds, run)
            history[f"phase{phase.number}"] = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
            atomic_write_json(run.history_path, history)
            state["phases_done"] = phase.number
            atomic_write_json(state_path, state)
        if best_path.exists():
            load_h5_weights(model, best_path)
    return model


def _score(model, config: TrainConfig, data: DecodedSplit, run: RunDir, strategy, seconds: float) -> dict:
    """Test-split metrics of the float model, written as ``metrics.json`` and ``metrics.md``."""
    test = data.indices["test"]
    predictions = np.argmax(predict_probabilities(model, data, "test", config.batch_size), axis=1) if len(test) else []
    report = classification_report(data.labels[test], np.asarray(predictions, int), data.split.classes)
    best_path = run.best_record_path
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

    Example (minutes of training; the README's and the train page's snippets run it)::

        result = train(TrainConfig(data_dir="flowers", image_size=160))
        result.test_accuracy
    """
    # Multi-worker: the strategy comes first (before any other TensorFlow op); only the chief
    # writes the run directory, the other workers a scratch one, removed at the end.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    config = _resolve_config(config, resume, check_existing=chief)
    run = RunDir(config.run_dir if chief else _worker_dir(config.run_dir, resume))
    with run.lock("train"):
        start = time.perf_counter()
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:  # parallel input pipelines and kernels otherwise sum in varying order
            tf.config.experimental.enable_op_determinism()
        data = load_data(run.path, config) if resume and run.is_started else prepare_data(config, run.path)
        run.write_config(config.to_dict())  # from here on the run exists and --resume continues it
        run.write_labels(data.split.classes)
        model = _fit(config, data, run, resume, strategy)
        with atomic_path(run.model_path, suffix=".h5") as tmp:
            model.save(str(tmp), include_optimizer=False)
        metrics = _score(model, config, data, run, strategy, time.perf_counter() - start)
    if not chief:
        shutil.rmtree(run.path, ignore_errors=True)
    logger.info(
        "Test accuracy %.2f %% on %d images; %d file(s) skipped; run in %s (%.0f s)",
        100 * metrics["accuracy"], metrics["num_images"], metrics["num_skipped"], config.run_dir,
        metrics["train_seconds"],
    )
    return TrainResult(config.run_dir, RunDir(config.run_dir).model_path, metrics["accuracy"], metrics)
