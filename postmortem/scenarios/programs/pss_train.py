"""A TF2 ParameterServerStrategy job configured by TF_CONFIG: ps and worker tasks run a
tf.distribute.Server; the chief is the coordinator, which schedules steps on the workers
with a ClusterCoordinator and saves a tf.train.Checkpoint.

    --save_after_steps N   the first save after N steps: log "save began", wait for
                           --save_gate (the harness freezes a ps first), then save
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--save_after_steps", type=int, default=20)
    parser.add_argument("--save_gate", default="")
    parser.add_argument("--step_sleep", type=float, default=0.05)
    parser.add_argument("--log_every", type=int, default=5)
    args = parser.parse_args()
    config = json.loads(os.environ["TF_CONFIG"])
    job, index = config["task"]["type"], int(config["task"]["index"])

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    import tensorflow as tf

    c.setup_logging()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if job in ("ps", "worker"):
        server = tf.distribute.Server(
            resolver.cluster_spec(), job_name=job, task_index=index, protocol="grpc", start=True
        )
        c.log.info("%s %s:%d at %s", c.SERVER_READY, job, index, server.target)
        server.join()
        return
    coordinate(resolver, args)


def coordinate(resolver: object, args: argparse.Namespace) -> None:
    import tensorflow as tf

    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        weights = tf.Variable(tf.random.normal([8, 1]), name="weights")
        global_step = tf.Variable(0, dtype=tf.int64, name="global_step")
    checkpoint = tf.train.Checkpoint(weights=weights, global_step=global_step)
    os.makedirs(args.checkpoint_dir, exist_ok=True)

    @tf.function
    def step() -> object:
        x = tf.random.normal([16, 8])
        y = tf.reduce_sum(x, axis=1, keepdims=True)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.matmul(x, weights) - y))
        weights.assign_sub(0.01 * tape.gradient(loss, weights))
        global_step.assign_add(1)
        return loss

    c.log.info("%s chief:0", c.SESSION_READY)
    number = 0
    saved = False
    while True:
        number += 1
        coordinator.schedule(step)
        coordinator.join()
        if number % args.log_every == 0 or number == 1:
            c.log.info(c.STEP_LINE.format(step=number, global_step=int(global_step.numpy())))
        if number >= args.save_after_steps and not saved:
            c.log.info("%s %d", c.SAVE_BEGIN, number)
            if args.save_gate:
                c.wait_for_file(args.save_gate)
            path = checkpoint.save(os.path.join(args.checkpoint_dir, "ckpt"))
            c.log.info("%s %d %s", c.SAVE_DONE, number, path)
            saved = True
        time.sleep(args.step_sleep)


if __name__ == "__main__":
    main()
