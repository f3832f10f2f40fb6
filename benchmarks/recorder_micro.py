"""The flight recorder's hook in one process, A/B: a 1-ps/1-worker cluster in-process,
MonitoredTrainingSession, 5 x 1,000 CPU-bound steps, with or without FlightRecorder().hook().

    python benchmarks/recorder_micro.py plain|hook

Run both modes alternately a few times; prints ms per step of each block of 1,000 and the
median. Removes what the side-by-side benchmark (recorder.py) shares: two clusters on the
same cores.
"""
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1
v1.disable_eager_execution()
from postmortem.recorder import FlightRecorder  # noqa: E402


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


spec = {"ps": [f"127.0.0.1:{port()}"], "worker": [f"127.0.0.1:{port()}"]}
ps = tf.distribute.Server(tf.train.ClusterSpec(spec), job_name="ps", task_index=0)
wk = tf.distribute.Server(tf.train.ClusterSpec(spec), job_name="worker", task_index=0)
mode = sys.argv[1]
with v1.device(v1.train.replica_device_setter(worker_device="/job:worker/task:0", cluster=spec)):
    gs = v1.train.get_or_create_global_step()
    x = v1.random_normal([32, 8])
    w = v1.get_variable("w", [8, 32])
    o = v1.get_variable("o", [32, 1])
    loss = v1.reduce_mean(v1.matmul(v1.nn.relu(v1.matmul(x, w)), o) ** 2)
    train = v1.train.GradientDescentOptimizer(0.01).minimize(loss, global_step=gs)
hooks = []
os.environ["POSTMORTEM_FLIGHT_DIR"] = tempfile.mkdtemp(prefix="postmortem-flight-")
if mode == "hook":
    hooks.append(FlightRecorder().hook())
with v1.train.MonitoredTrainingSession(
    master=wk.target, is_chief=True, hooks=hooks, save_checkpoint_secs=None,
    log_step_count_steps=100,
) as s:
    for _ in range(300):
        s.run(train)
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(1000):
            s.run(train)
        rates.append((time.perf_counter() - t) / 1000 * 1e3)
blocks = " ".join(f"{r:.3f}" for r in rates)
print(mode, "ms/step", blocks, "median", f"{statistics.median(rates):.3f}")
os._exit(0)
