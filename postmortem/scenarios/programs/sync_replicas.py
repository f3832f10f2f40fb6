"""Synchronous replicated training: SyncReplicasOptimizer under a Supervisor.

The shape of tensorflow#12090 (Inception v3 distributed_train.py): every step needs a
gradient from each of `replicas_to_aggregate` workers; the chief runs the sync-token
queue runner, and the Supervisor's timer thread saves a non-sharded checkpoint every
--save_model_secs, logging "Saving checkpoint to path ..." before each save. If one
replica stops, every other worker waits for a sync token, while the chief's checkpoint
thread keeps saving.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def main() -> None:
    parser = c.base_parser(__doc__ or "")
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--var", action="append", default=[], type=c.parse_var_spec)
    parser.add_argument(
        "--replicas_to_aggregate", type=int, default=0, help="default: the number of workers"
    )
    parser.add_argument("--save_model_secs", type=float, default=3.0)
    parser.add_argument("--step_sleep", type=float, default=0.05)
    args = parser.parse_args()
    tf = c.import_tf()
    v1 = tf.compat.v1

    if args.job_name == "ps":
        c.run_ps(tf, args)
        return

    server = c.start_server(tf, args)
    cluster = tf.train.ClusterSpec(c.cluster_spec(args))
    num_workers = len(args.worker_hosts.split(","))
    is_chief = args.task_index == 0
    with v1.device(
        v1.train.replica_device_setter(
            cluster=cluster, worker_device=f"/job:worker/task:{args.task_index}"
        )
    ):
        loss, global_step = c.build_model(tf, args.var)
        opt = v1.train.SyncReplicasOptimizer(
            v1.train.GradientDescentOptimizer(0.01),
            replicas_to_aggregate=args.replicas_to_aggregate or num_workers,
            total_num_replicas=num_workers,
        )
        train_op = opt.minimize(loss, global_step=global_step)
        local_init_op = opt.chief_init_op if is_chief else opt.local_step_init_op
        chief_queue_runner = opt.get_chief_queue_runner()
        sync_init_op = opt.get_init_tokens_op()
        init_op = v1.global_variables_initializer()
    recorder = c.flight_recorder(args)
    # Supervisor's saver=None turns checkpointing off: pass one only to record its saves.
    saver_arg = {"saver": recorder.saver()} if recorder is not None else {}

    sv = v1.train.Supervisor(
        is_chief=is_chief,
        logdir=args.checkpoint_dir,
        init_op=init_op,
        local_init_op=local_init_op,
        ready_for_local_init_op=opt.ready_for_local_init_op,
        global_step=global_step,
        save_model_secs=args.save_model_secs,
        save_summaries_secs=0,
        summary_op=None,
        recovery_wait_secs=1,
        **saver_arg,
    )
    config = c.session_config(tf, args)
    sess = sv.prepare_or_wait_for_session(server.target, config=config)
    if is_chief:
        sess.run(sync_init_op)
        sv.start_queue_runners(sess, [chief_queue_runner])
    if recorder is not None:
        recorder.start()
        recorder.record_graph(sess.graph, saver=sv.saver, config=config, sync_optimizer=opt)
        sess = recorder.wrap(sess, global_step)
    c.log.info("%s %s:%d", c.SESSION_READY, args.job_name, args.task_index)

    steps = c.StepLogger()
    while True:
        _, gstep = sess.run([train_op, global_step])
        steps.tick(gstep)
        if args.step_sleep:
            time.sleep(args.step_sleep)


if __name__ == "__main__":
    main()
