"""A TF2 MultiWorkerMirroredStrategy job trained with tf_keras `Model.fit`, configured by
TF_CONFIG, as Keras users write it: a model with batch normalization (its moving
statistics are sync-on-read variables) and a `ModelCheckpoint` callback.

Workers listed in --save_on get the ModelCheckpoint callback; the others do not (the
common `callbacks = [ModelCheckpoint(...)] if is_chief else []`). Saving reads the
sync-on-read variables, which all-reduces them: when only some workers save, the savers
wait for the others in that collective forever.

With TF_CONFIG task type "evaluator" the process is a sidecar evaluator: it builds the
same model and evaluates every checkpoint that appears (tf_keras SidecarEvaluator), with
no collective and no strategy.

Needs the tf-keras package and TF_USE_LEGACY_KERAS=1 (Keras 3 cannot run MWMS fit).
Logs `step N global_step N` every --log_every steps and `save began` / `save done`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--save_on", default="0", help="comma-separated worker indexes")
    parser.add_argument("--save_freq", type=int, default=40, help="steps between saves")
    parser.add_argument("--steps_per_epoch", type=int, default=1000)
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--step_sleep", type=float, default=0.05)
    args = parser.parse_args()
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    config = json.loads(os.environ["TF_CONFIG"])
    task = config["task"]
    index = int(task["index"])
    role = f"{task['type']}:{index}"

    import tensorflow as tf
    import tf_keras as keras

    c.setup_logging()
    if task["type"] == "evaluator":
        evaluate(tf, keras, args, role)
        return
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = build_model(keras)
    saves = {int(i) for i in args.save_on.split(",") if i.strip()}
    counter = progress(keras, args, role, index in saves)
    callbacks: list[Any] = [counter]
    if index in saves:  # a plain ModelCheckpoint, as users write it; it saves the
        # non-chief workers' copies to temporary directories of their own and deletes them
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(args.checkpoint_dir, "ckpt-{epoch:04d}-{batch:06d}"),
                save_weights_only=True,
                save_freq=args.save_freq,
            )
        )
        callbacks.append(save_done(keras, args, counter, args.checkpoint_dir))
    model.fit(
        dataset(tf),
        epochs=1_000_000,
        steps_per_epoch=args.steps_per_epoch,
        callbacks=callbacks,
        verbose=0,
    )


def build_model(keras: Any) -> Any:
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    return model


def dataset(tf: Any) -> Any:
    x = tf.random.normal([256, 8])
    y = tf.reduce_sum(x, axis=1, keepdims=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16).with_options(options)


def progress(keras: Any, args: argparse.Namespace, role: str, saves: bool) -> Any:
    """Logs the step markers the harness waits for (and `save began` just before the
    ModelCheckpoint that follows it in the callback list saves), and paces the job."""
    import time

    class Progress(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
        step = 0

        def on_train_begin(self, logs: Any = None) -> None:
            c.log.info("%s %s", c.SESSION_READY, role)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.step += 1
            if self.step % args.log_every == 0 or self.step == 1:
                c.log.info(c.STEP_LINE.format(step=self.step, global_step=self.step))
            if saves and self.step % args.save_freq == 0:
                c.log.info("%s %d", c.SAVE_BEGIN, self.step)
            time.sleep(args.step_sleep)

    return Progress()


def save_done(keras: Any, args: argparse.Namespace, counter: Any, directory: str) -> Any:
    """After the ModelCheckpoint in the callback list: logs `save done` once it returned."""

    class SaveDone(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if counter.step % args.save_freq == 0:
                c.log.info("%s %d %s", c.SAVE_DONE, counter.step, directory)

    return SaveDone()


def evaluate(tf: Any, keras: Any, args: argparse.Namespace, role: str) -> None:
    """The sidecar evaluator: evaluates each new checkpoint of the chief, forever."""
    model = build_model(keras)
    c.log.info("%s %s", c.SESSION_READY, role)
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    keras.utils.SidecarEvaluator(
        model,
        data=dataset(tf).take(4),
        checkpoint_dir=args.checkpoint_dir,
        steps=4,
        max_evaluations=None,
    ).start()


if __name__ == "__main__":
    main()
