"""Training progress as a Keras callback: a live bar per epoch, one summary line after each."""

from __future__ import annotations

import logging
import time

from edgeship.progress import Progress, progress
from edgeship.train.tfkeras import keras

__all__ = ["EpochProgress"]

logger = logging.getLogger(__name__)


class EpochProgress(keras.callbacks.Callback):
    """A bar over each epoch's steps with the running loss and accuracy (on stderr; plain
    periodic lines when stderr is not a terminal), then one log line with the epoch's metrics."""

    def __init__(self, phase: str, epochs: int, steps: int):
        super().__init__()
        self.phase, self.epochs, self.steps = phase, epochs, steps
        self._context = None
        self._bar: Progress | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch, time.perf_counter()
        self._context = progress(self.steps, f"{self.phase} epoch {epoch + 1}/{self.epochs}")
        self._bar = self._context.__enter__()

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            logs = logs or {}
            self._bar.update(note=f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f}")

    def on_test_begin(self, logs=None):
        if self._bar is not None:  # the epoch's validation pass, after its last step
            self._bar.update(0, note="validating")

    def on_epoch_end(self, epoch, logs=None):
        self._close()
        logs = logs or {}
        logger.info(
            "%s epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  (%.0f s)",
            self.phase, epoch + 1, self.epochs, logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
            logs.get("val_loss", float("nan")), logs.get("val_accuracy", float("nan")),
            time.perf_counter() - self.start,
        )

    def on_train_end(self, logs=None):
        self._close()  # an interrupted epoch must not leave its bar on the screen

    def _close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = self._bar = None
