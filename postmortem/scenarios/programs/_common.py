"""Shared by the scenario programs (run as scripts) and by the harness (imported).

TensorFlow is imported lazily so the harness can read the marker strings without it.
Every program takes the classic flags ``--job_name --task_index --ps_hosts --worker_hosts``
so a capture tool can infer each process's role from its command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

# Markers the harness waits for in a program's stderr log. Each program logs them with
# the standard formatter, so a line reads "... INFO <marker> ...".
SERVER_READY = "tf server ready"
SAVE_BEGIN = "save began"
SAVE_DONE = "save done"
SAVE_FAILED = "save failed"
STEP_LINE = "step {step} global_step {global_step}"
SESSION_READY = "session ready"
VARIABLE_LINE = "variable"  # "variable NAME shape [..] bytes N device /job:ps/task:K"

LOG_FORMAT = "%(asctime)s %(process)d %(threadName)s %(levelname)s %(message)s"

log = logging.getLogger("scenario")


def take_ctrl_c() -> None:
    """Take SIGINT as a job run from a terminal does (KeyboardInterrupt). Started from a
    background shell (a CI runner, `cmd &`), a process inherits SIGINT ignored, and Python
    keeps it ignored: the storage-stall scenario's SIGINT to its blocked writer (an
    operator's Ctrl-C) would then do nothing."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def base_parser(description: str) -> argparse.ArgumentParser:
    take_ctrl_c()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--job_name", required=True, choices=["ps", "worker"])
    parser.add_argument("--task_index", type=int, required=True)
    parser.add_argument("--ps_hosts", required=True, help="comma-separated host:port")
    parser.add_argument("--worker_hosts", required=True, help="comma-separated host:port")
    parser.add_argument("--recorder", action="store_true", help="run postmortem's flight recorder")
    return parser


def flight_recorder(args: argparse.Namespace) -> Any:
    """postmortem.recorder.FlightRecorder when --recorder is given, else None."""
    if not getattr(args, "recorder", False):
        return None
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    if repo not in sys.path:
        sys.path.insert(0, repo)  # run as a script from the repository: postmortem is there
    from postmortem.recorder import FlightRecorder

    return FlightRecorder()  # its defaults, as a job would run it


def setup_logging() -> None:
    """Route Python logging (ours and TensorFlow's, at INFO) to stderr, line-buffered."""
    take_ctrl_c()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT, force=True)
    # The tensorflow logger adds its own stderr handler unless the root has one; keep
    # exactly one so every line appears once, and at INFO so Supervisor's
    # "Saving checkpoint to path" lines show.
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.setLevel(logging.INFO)
    tf_logger.propagate = True
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)


def import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    setup_logging()  # TensorFlow may have installed a handler while importing
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    setup_logging()
    return tf


def cluster_spec(args: argparse.Namespace) -> dict[str, list[str]]:
    return {"ps": args.ps_hosts.split(","), "worker": args.worker_hosts.split(",")}


def start_server(tf: Any, args: argparse.Namespace) -> Any:
    cluster = tf.train.ClusterSpec(cluster_spec(args))
    server = tf.distribute.Server(cluster, job_name=args.job_name, task_index=args.task_index)
    log.info("%s %s:%d at %s", SERVER_READY, args.job_name, args.task_index, server.target)
    return server


def run_ps(tf: Any, args: argparse.Namespace) -> None:
    server = start_server(tf, args)
    server.join()


def session_config(tf: Any, args: argparse.Namespace) -> Any:
    # Only talk to the ps tasks and ourselves: a stopped peer worker must not block
    # session creation (the classic dist_test/mnist_replica setup).
    return tf.compat.v1.ConfigProto(
        device_filters=["/job:ps", f"/job:worker/task:{args.task_index}"]
    )


def parse_var_spec(spec: str) -> tuple[str, list[int]]:
    """ "test_weight1:24500000x22" -> ("test_weight1", [24500000, 22])."""
    name, _, shape = spec.partition(":")
    if not name or not shape:
        raise argparse.ArgumentTypeError(f"bad --var {spec!r}: want NAME:D1xD2...")
    return name, [int(d) for d in shape.split("x")]


def build_model(tf: Any, extra_vars: list[tuple[str, list[int]]], hidden: int = 32) -> Any:
    """A tiny regression net (get_variable + matmul) plus zero-initialised extra variables.

    Returns (loss, global_step). Extra variables are not trained: they only make the
    checkpoint as big as a scenario needs, and zeros initialise fast.
    """
    v1 = tf.compat.v1
    global_step = v1.train.get_or_create_global_step()
    x = v1.random_normal([16, 8])
    y = tf.reduce_sum(x, axis=1, keepdims=True)
    with v1.variable_scope("hidden"):
        w1 = v1.get_variable("weights", [8, hidden])
        b1 = v1.get_variable("biases", [hidden], initializer=v1.zeros_initializer())
    with v1.variable_scope("out"):
        w2 = v1.get_variable("weights", [hidden, 1])
    h = tf.nn.relu(tf.matmul(x, w1) + b1)
    loss = tf.reduce_mean(tf.square(tf.matmul(h, w2) - y))
    for name, shape in extra_vars:
        v1.get_variable(
            name, shape, dtype=tf.float32, initializer=v1.zeros_initializer(), trainable=False
        )
    for var in v1.global_variables():  # where each variable lives: the harness's ground truth
        dims = var.shape.as_list()
        nbytes = var.dtype.size
        for d in dims:
            nbytes *= d
        log.info(
            "%s %s shape %s bytes %d device %s",
            VARIABLE_LINE,
            var.op.name,
            dims,
            nbytes,
            var.device,
        )
    return loss, global_step


class StepLogger:
    """Logs "step N global_step G" at most every `every` seconds."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.step = 0
        self._last = 0.0

    def tick(self, global_step: int) -> None:
        self.step += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            log.info(STEP_LINE.format(step=self.step, global_step=global_step))


def wait_for_file(path: str, poll: float = 0.05) -> None:
    while not os.path.exists(path):
        time.sleep(poll)
