"""A TF2 MultiWorkerMirroredStrategy job: a custom training loop that saves a checkpoint
every few steps, configured by TF_CONFIG (as TF2 jobs are, with no cluster flags).

A metric-like counter is a sync-on-read variable (as Keras metrics and batch-norm
statistics are): saving it all-reduces it, a collective every worker must join. Workers
listed in --skip_save_tasks do not save: they wait for the chief's checkpoint (a file
barrier, as jobs that hand a checkpoint to the next stage do) or, with
--skip_action=evaluate, run a local evaluation with no collective. Either way the savers
wait in the collective forever: the hang of "only the chief saves".

Logs `step N global_step N` every --log_every steps and `save began` / `save done`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--save_every_steps", type=int, default=40)
    parser.add_argument("--step_sleep", type=float, default=0.05)
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--skip_save_tasks", default="", help="comma-separated worker indexes")
    parser.add_argument("--skip_action", choices=["wait", "evaluate"], default="wait")
    parser.add_argument("--api", choices=["checkpoint", "manager"], default="checkpoint")
    parser.add_argument("--save_gate", default="",
                        help="before the first save: log 'save began', wait for this file")
    parser.add_argument("--recorder", action="store_true", help="run postmortem's flight recorder")
    parser.add_argument("--timeout_seconds", type=float, default=0.0,
                        help="CommunicationOptions(timeout_seconds); 0: none, as by default")
    args = parser.parse_args()
    config = json.loads(os.environ["TF_CONFIG"])
    task = config["task"]
    index = int(task["index"])
    role = f"{task['type']}:{index}"
    skip = {int(i) for i in args.skip_save_tasks.split(",") if i.strip()}

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    import tensorflow as tf

    c.setup_logging()
    options = (
        tf.distribute.experimental.CommunicationOptions(timeout_seconds=args.timeout_seconds)
        if args.timeout_seconds > 0
        else None
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    with strategy.scope():
        weights = tf.Variable(tf.random.normal([8, 1]), name="weights")
        examples = tf.Variable(
            0.0,
            name="examples_seen",
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
        )
    checkpoint = tf.train.Checkpoint(weights=weights, examples_seen=examples)
    is_chief = index == 0
    # Every saver writes: the chief where the job keeps checkpoints, the others (when they
    # save) to a directory of their own, as tf_keras's ModelCheckpoint does.
    directory = args.checkpoint_dir if is_chief else f"{args.checkpoint_dir}-worker-{index}"
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=3)

    @tf.function
    def step() -> object:
        def replica() -> object:
            x = tf.random.normal([16, 8])
            y = tf.reduce_sum(x, axis=1, keepdims=True)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.matmul(x, weights) - y))
            grad = tape.gradient(loss, weights)
            grad = tf.distribute.get_replica_context().all_reduce("SUM", grad)
            weights.assign_sub(0.01 * grad)
            examples.assign_add(16.0)
            return loss

        return strategy.run(replica)

    recorder = c.flight_recorder(args)
    if recorder is not None:
        recorder.start()
    c.log.info("%s %s", c.SESSION_READY, role)
    number = 0
    while True:
        number += 1
        if recorder is not None:
            with recorder.step(number):
                step()
        else:
            step()
        if number % args.log_every == 0 or number == 1:
            c.log.info(c.STEP_LINE.format(step=number, global_step=number))
        if number % args.save_every_steps == 0:
            if index in skip:
                skip_save(tf, args, number)
            else:
                c.log.info("%s %d", c.SAVE_BEGIN, number)
                if args.save_gate:
                    c.wait_for_file(args.save_gate)
                saving = (
                    recorder.saving(directory, number)
                    if recorder is not None
                    else contextlib.nullcontext()
                )
                try:
                    with saving:
                        path = save(args, checkpoint, manager, directory, number)
                except Exception:
                    c.log.exception("%s %d", c.SAVE_FAILED, number)
                    raise
                c.log.info("%s %d %s", c.SAVE_DONE, number, path)
        time.sleep(args.step_sleep)


def save(args: argparse.Namespace, checkpoint: Any, manager: Any, directory: str,
         number: int) -> Any:
    if args.api == "manager":
        return manager.save(checkpoint_number=number)
    return checkpoint.save(os.path.join(directory, "ckpt"))


def skip_save(tf: object, args: argparse.Namespace, number: int) -> None:
    """What a worker that does not save does instead; no collective."""
    if args.skip_action == "evaluate":
        c.log.info("evaluating locally at step %d", number)
        total = 0.0
        while True:  # a long local evaluation: busy, no collective
            for _ in range(200):
                total += sum(i * 0.5 for i in range(500))
            time.sleep(0.01)
    c.log.info("waiting for the chief's checkpoint of step %d", number)
    marker = os.path.join(args.checkpoint_dir, "checkpoint")
    while not os.path.exists(marker):
        time.sleep(0.5)


if __name__ == "__main__":
    main()
