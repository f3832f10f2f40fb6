"""Between-graph replicated training with a Supervisor and a non-sharded Saver.

The chief (worker 0) trains, then saves from its main thread, the way a
Supervisor-managed job does (tensorflow#6326, #6117): the Saver is built under
replica_device_setter, so SaveV2 runs on the worker and pulls every variable from the ps.

  --save_after_steps N   train N steps before the first save
  --save_gate PATH       log "save began", then wait for PATH before saving (the harness
                         injects its fault in between)
  --save_every_secs S    save again every S seconds (0: save once)
  --retry_failed_save_secs S  log a failed save in full and retry it every S seconds
                         (0: let the error end the program)
  --var NAME:D1xD2       extra zero-initialised variable on the ps (repeatable)
"""

from __future__ import annotations

import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def main() -> None:
    parser = c.base_parser(__doc__ or "")
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--var", action="append", default=[], type=c.parse_var_spec)
    parser.add_argument("--sharded", action="store_true", help="Saver(sharded=True)")
    parser.add_argument("--save_after_steps", type=int, default=20)
    parser.add_argument("--save_gate", default="")
    parser.add_argument("--save_every_secs", type=float, default=0.0)
    parser.add_argument("--retry_failed_save_secs", type=float, default=0.0)
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
        saver = v1.train.Saver(sharded=args.sharded)
        init_op = v1.global_variables_initializer()

    sv = v1.train.Supervisor(
        is_chief=is_chief,
        logdir=args.checkpoint_dir,
        init_op=init_op,
        saver=saver,
        global_step=global_step,
        save_model_secs=0,  # the main thread saves, below
        save_summaries_secs=0,
        summary_op=None,
        recovery_wait_secs=1,
    )
    config = c.session_config(tf, args)
    sess = sv.prepare_or_wait_for_session(server.target, config=config)
    recorder = c.flight_recorder(args)
    if recorder is not None:
        recorder.start()
        recorder.record_graph(sess.graph, saver=saver, config=config)
        sess = recorder.wrap(sess, global_step)
    c.log.info("%s %s:%d", c.SESSION_READY, args.job_name, args.task_index)

    steps = c.StepLogger()
    next_save = None
    while True:
        _, gstep = sess.run([train_op, global_step])
        steps.tick(gstep)
        if args.step_sleep:
            time.sleep(args.step_sleep)
        if not is_chief:
            continue
        due = (
            steps.step == args.save_after_steps
            if next_save is None
            else args.save_every_secs > 0 and time.monotonic() >= next_save
        )
        if not due:
            continue
        gstep = sess.run(global_step)
        # Same text as Supervisor's SVTimerCheckpointThread, so log collectors see it.
        v1.logging.info("Saving checkpoint to path %s", sv.save_path)
        c.log.info("%s global_step %d path %s", c.SAVE_BEGIN, gstep, sv.save_path)
        if args.save_gate and next_save is None:
            c.wait_for_file(args.save_gate)
        while True:
            started = time.monotonic()
            try:
                if recorder is not None:
                    with recorder.saving(sv.save_path, gstep):
                        path = saver.save(sess, sv.save_path, global_step=gstep)
                else:
                    path = saver.save(sess, sv.save_path, global_step=gstep)
            except tf.errors.OpError:
                c.log.error("%s global_step %d:\n%s", c.SAVE_FAILED, gstep, traceback.format_exc())
                if not args.retry_failed_save_secs:
                    raise
                time.sleep(args.retry_failed_save_secs)
                v1.logging.info("Saving checkpoint to path %s", sv.save_path)
                c.log.info("%s global_step %d path %s (retry)", c.SAVE_BEGIN, gstep, sv.save_path)
            else:
                c.log.info(
                    "%s global_step %d path %s in %.1fs",
                    c.SAVE_DONE,
                    gstep,
                    path,
                    time.monotonic() - started,
                )
                break
        next_save = time.monotonic() + (args.save_every_secs or float("inf"))


if __name__ == "__main__":
    main()
