"""Small target programs for the capture tests: each prints "ready", then behaves in a
known way until killed. Run as `python capture_targets.py KIND [ARGS...]`.

Kept free of pytest and postmortem imports: these are the processes being captured,
and the tests find frames in them by function name and by the `# AT:` line markers.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time


def ready(what: str = "ready") -> None:
    print(what, flush=True)


def sleeping_target() -> None:
    ready()
    while True:
        time.sleep(3600)


def spinning_target() -> None:
    ready()
    total = 0
    while True:
        total += 1


def counting_target(counter_file: str) -> None:
    """Writes an ever-increasing counter (atomically) about every 10 ms."""
    count = 0
    tmp = counter_file + ".tmp"
    while True:
        count += 1
        with open(tmp, "w") as handle:
            handle.write(str(count))
        os.replace(tmp, counter_file)
        if count == 1:
            ready()
        time.sleep(0.01)


def exiting_target(exit_file: str) -> None:
    """Exits as soon as `exit_file` exists: the test decides when, not a timer."""
    ready()
    while not os.path.exists(exit_file):
        time.sleep(0.01)
    sys.exit(0)


def threaded_sleeping_target(threads: int) -> None:
    for index in range(threads):
        threading.Thread(target=time.sleep, args=(3600,), name=f"idle-{index}",
                         daemon=True).start()
    sleeping_target()


def deadlock_target() -> None:
    """Two named threads take two locks in opposite order and meet at the crossing."""
    train_stats_lock = threading.Lock()
    checkpoint_lock = threading.Lock()
    both_hold_one = threading.Barrier(2)
    crossed = [threading.Event(), threading.Event()]

    def trainer() -> None:
        with train_stats_lock:
            both_hold_one.wait()
            crossed[0].set()
            with checkpoint_lock:  # AT: trainer waits
                pass

    def saver() -> None:
        with checkpoint_lock:
            both_hold_one.wait()
            crossed[1].set()
            with train_stats_lock:  # AT: saver waits
                pass

    threads = [threading.Thread(target=trainer, name="trainer"),
               threading.Thread(target=saver, name="checkpoint-saver")]
    for thread in threads:
        thread.start()
    for event in crossed:
        event.wait()
    # Ready only once both threads stand at their second `with` (blocked in acquire):
    # a condition, not a delay that a loaded machine may outlast.
    waits_at = {thread.ident: _marker_line(name) for thread, name in
                zip(threads, ("trainer waits", "saver waits"), strict=True)}
    while any(getattr(sys._current_frames().get(ident), "f_lineno", None) != line
              for ident, line in waits_at.items()):
        time.sleep(0.01)
    ready()
    for thread in threads:
        thread.join()


def _marker_line(text: str) -> int:
    with open(__file__) as handle:
        for number, line in enumerate(handle, start=1):
            if f"# AT: {text}" in line and "_marker_line" not in line:
                return number
    raise LookupError(text)


def _cluster(args: argparse.Namespace) -> dict[str, list[str]]:
    return {"ps": args.ps_hosts.split(","), "worker": args.worker_hosts.split(",")}


def tf_ps(args: argparse.Namespace) -> None:
    import tensorflow as tf

    server = tf.distribute.Server(tf.train.ClusterSpec(_cluster(args)), job_name="ps",
                                  task_index=args.task_index, start=True)
    ready()
    server.join()


def tf_worker(args: argparse.Namespace) -> None:
    """replica_device_setter puts the variables on the ps; a non-sharded Saver pulls them
    to the worker at save: with the ps stopped, Saver.save blocks in session.run."""
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    cluster = tf.train.ClusterSpec(_cluster(args))
    server = tf.distribute.Server(cluster, job_name="worker", task_index=args.task_index,
                                  start=True)
    device = f"/job:worker/task:{args.task_index}"
    with v1.device(v1.train.replica_device_setter(cluster=cluster, worker_device=device)):
        weights = v1.get_variable("weights", shape=[128, 64],
                                  initializer=v1.glorot_uniform_initializer())
        inputs = tf.random.normal([16, 128])
        loss = tf.reduce_mean(tf.square(tf.matmul(inputs, weights)))
        global_step = v1.train.get_or_create_global_step()
        train_op = v1.train.GradientDescentOptimizer(0.01).minimize(
            loss, global_step=global_step)
        saver = v1.train.Saver()  # not sharded: SaveV2 runs on the worker
        init_op = v1.global_variables_initializer()
    with v1.Session(server.target) as sess:
        sess.run(init_op)
        for _ in range(5):
            sess.run(train_op)
        # An int step, so that the run that blocks is the save itself (SaveV2), not
        # Saver.save's own read of the global step from the ps.
        step = int(sess.run(global_step))
        ready("SAVE_BEGIN")
        while not os.path.exists(args.go_file):
            time.sleep(0.05)
        ready("SAVE_CALLING")
        saver.save(sess, os.path.join(args.checkpoint_dir, "model.ckpt"), global_step=step)
        ready("SAVE_DONE")
        while True:
            time.sleep(3600)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("value", nargs="?")
    parser.add_argument("--job_name")
    parser.add_argument("--task_index", type=int, default=0)
    parser.add_argument("--ps_hosts", default="")
    parser.add_argument("--worker_hosts", default="")
    parser.add_argument("--checkpoint_dir", default="")
    parser.add_argument("--go_file", default="")
    args = parser.parse_args(argv)
    if args.kind == "sleep":
        sleeping_target()
    elif args.kind == "spin":
        spinning_target()
    elif args.kind == "count":
        counting_target(args.value)
    elif args.kind == "exit":
        exiting_target(args.value)
    elif args.kind == "threads":
        threaded_sleeping_target(int(args.value))
    elif args.kind == "deadlock":
        deadlock_target()
    elif args.kind == "tf":
        (tf_ps if args.job_name == "ps" else tf_worker)(args)
    else:
        parser.error(f"unknown kind {args.kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
