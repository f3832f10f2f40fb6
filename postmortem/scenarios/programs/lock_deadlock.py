"""A training loop and a checkpoint-saver thread that take two locks in opposite order.

The main thread holds the train-stats lock while it runs a step, and takes the checkpoint
lock when it wants to export; the saver thread holds the checkpoint lock while it saves
and then takes the train-stats lock to record the saved step. Each order is fine alone;
together they deadlock. At --deadlock_after_steps the two threads meet at the crossing
on purpose (an Event pair), so the deadlock is certain rather than a matter of timing.
"""

from __future__ import annotations

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

GOT_FIRST = "got lock {held}, waiting {wanted}"


def main() -> None:
    parser = c.base_parser(__doc__ or "")
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--var", action="append", default=[], type=c.parse_var_spec)
    parser.add_argument("--save_secs", type=float, default=1.0)
    parser.add_argument("--deadlock_after_steps", type=int, default=40)
    parser.add_argument("--saver_thread_name", default="checkpoint-saver")
    parser.add_argument("--step_sleep", type=float, default=0.05)
    args = parser.parse_args()
    tf = c.import_tf()
    v1 = tf.compat.v1

    if args.job_name == "ps":
        c.run_ps(tf, args)
        return

    server = c.start_server(tf, args)
    cluster = tf.train.ClusterSpec(c.cluster_spec(args))
    is_chief = args.task_index == 0
    with v1.device(
        v1.train.replica_device_setter(
            cluster=cluster, worker_device=f"/job:worker/task:{args.task_index}"
        )
    ):
        loss, global_step = c.build_model(tf, args.var)
        train_op = v1.train.GradientDescentOptimizer(0.01).minimize(loss, global_step=global_step)
        saver = v1.train.Saver()
        init_op = v1.global_variables_initializer()
    sv = v1.train.Supervisor(
        is_chief=is_chief,
        logdir=args.checkpoint_dir,
        init_op=init_op,
        saver=saver,
        global_step=global_step,
        save_model_secs=0,
        save_summaries_secs=0,
        summary_op=None,
        recovery_wait_secs=1,
    )
    config = c.session_config(tf, args)
    sess = sv.prepare_or_wait_for_session(server.target, config=config)
    train_sess = sess  # the training loop's session: the recorder's, when it runs
    recorder = c.flight_recorder(args)
    if recorder is not None:
        recorder.start()
        recorder.record_graph(sess.graph, saver=saver, config=config)
        recorder.watch_saver(saver)  # saves from the saver thread
        train_sess = recorder.wrap(sess, global_step)
    c.log.info("%s %s:%d", c.SESSION_READY, args.job_name, args.task_index)

    train_stats_lock = threading.Lock()  # "A": guards step bookkeeping
    checkpoint_lock = threading.Lock()  # "B": guards the checkpoint directory
    stats = {"step": 0, "last_saved_step": -1}
    crossing = threading.Event()  # set once the deadlock step is reached
    saver_holds_b = threading.Event()
    main_holds_a = threading.Event()

    def save_loop() -> None:
        while True:
            time.sleep(args.save_secs)
            with checkpoint_lock:
                gstep = sess.run(global_step)
                v1.logging.info("Saving checkpoint to path %s", sv.save_path)
                c.log.info("%s global_step %d path %s", c.SAVE_BEGIN, gstep, sv.save_path)
                path = saver.save(sess, sv.save_path, global_step=gstep)
                c.log.info("%s global_step %d path %s", c.SAVE_DONE, gstep, path)
                if crossing.is_set():
                    saver_holds_b.set()
                    c.log.info(
                        GOT_FIRST.format(held="B (checkpoint_lock)", wanted="A (train_stats_lock)")
                    )
                    main_holds_a.wait()
                with train_stats_lock:
                    stats["last_saved_step"] = gstep

    if is_chief:
        threading.Thread(target=save_loop, name=args.saver_thread_name, daemon=True).start()

    steps = c.StepLogger()
    while True:
        with train_stats_lock:
            _, gstep = train_sess.run([train_op, global_step])
            stats["step"] += 1
            steps.tick(gstep)
            if is_chief and stats["step"] >= args.deadlock_after_steps:
                crossing.set()
                main_holds_a.set()
                c.log.info(
                    GOT_FIRST.format(held="A (train_stats_lock)", wanted="B (checkpoint_lock)")
                )
                saver_holds_b.wait()
                with checkpoint_lock:  # export a snapshot marker next to the checkpoint
                    stats["exported_step"] = gstep
        if args.step_sleep:
            time.sleep(args.step_sleep)


if __name__ == "__main__":
    main()
