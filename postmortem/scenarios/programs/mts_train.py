"""Asynchronous between-graph training under MonitoredTrainingSession: a healthy job.

Every worker steps on its own; the chief's CheckpointSaverHook saves a sharded checkpoint
(the Scaffold's default Saver: one SaveV2 per ps) every --save_checkpoint_secs, and
TensorFlow's own hooks log progress the way real jobs do: StepCounterHook's
"global_step/sec: N" and LoggingTensorHook's "loss = ..., step = N". With
--log_format=tf those lines keep TensorFlow's own format, "INFO:tensorflow:...", which has
no timestamp (the capture places them in time by where they end in the log file). With
--log_format=none the job logs no step at all (as jobs that log to a metrics service do):
only a flight recorder (--recorder) shows its progress.

  --step_sleep S        seconds between steps (0: as fast as the CPU goes)
  --var NAME:D1xD2      extra zero-initialised variable on the ps (repeatable)
  --unsharded           Saver(sharded=False) in the Scaffold instead of TF's default
"""

from __future__ import annotations

import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def main() -> None:
    parser = c.base_parser(__doc__ or "")
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--var", action="append", default=[], type=c.parse_var_spec)
    parser.add_argument("--save_checkpoint_secs", type=float, default=2.0)
    parser.add_argument("--log_step_count_steps", type=int, default=50)
    parser.add_argument("--log_every_n_iter", type=int, default=20)
    parser.add_argument("--step_sleep", type=float, default=0.05)
    parser.add_argument("--unsharded", action="store_true")
    parser.add_argument("--log_format", choices=["timestamped", "tf", "none"], default="tf")
    args = parser.parse_args()
    tf = c.import_tf()
    v1 = tf.compat.v1
    if args.log_format == "tf":
        # TensorFlow's own format: "INFO:tensorflow:global_step/sec: 12.3", no time.
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

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
    scaffold = None
    if args.unsharded:
        scaffold = v1.train.Scaffold(saver=v1.train.Saver(sharded=False))
    quiet = args.log_format == "none"
    hooks = (
        []
        if quiet
        else [
            v1.train.LoggingTensorHook({"loss": loss, "step": global_step}, args.log_every_n_iter)
        ]
    )
    recorder = c.flight_recorder(args)
    if recorder is not None:
        hooks.append(recorder.hook())
    with v1.train.MonitoredTrainingSession(
        master=server.target,
        is_chief=is_chief,
        checkpoint_dir=args.checkpoint_dir,
        scaffold=scaffold,
        hooks=hooks,
        save_checkpoint_secs=args.save_checkpoint_secs if is_chief else None,
        save_summaries_steps=None,
        save_summaries_secs=None,
        log_step_count_steps=None if quiet else args.log_step_count_steps,
        config=c.session_config(tf, args),
    ) as sess:
        c.log.info("%s %s:%d", c.SESSION_READY, args.job_name, args.task_index)
        steps = c.StepLogger()
        while not sess.should_stop():
            _, gstep = sess.run([train_op, global_step])
            if not quiet:
                steps.tick(gstep)
            if args.step_sleep:
                time.sleep(args.step_sleep)


if __name__ == "__main__":
    main()
