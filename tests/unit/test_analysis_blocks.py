"""Building blocks of the analyzer, on hand-made inputs shaped like real ones."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from postmortem.analysis.logs import CREATE_SESSION_WAIT, OVERSIZED, RENDEZVOUS, STEP_LINE
from postmortem.analysis.roles import build_cluster, flag, own_task, role_from_device
from postmortem.analysis.stacktree import main_thread, outliers, stack_classes
from postmortem.analysis.threads import enclosing_with_locks, lock_expression
from postmortem.model import Frame, Stack, Status, Thread, WaitKind

# The worker's error as TensorFlow 2.21 prints it (HANGS.md, measured).
OVERSIZED_ERROR = (
    "tensorflow.python.framework.errors_impl.InternalError: From /job:ps/replica:0/task:0: "
    "Failed to encode tensor to byte buffer: Cannot encode a Tensor that exceeds the 2GB "
    "protobuf limit. Exceeded bytes: 8516352 (rendezvous_key: /job:ps/replica:0/task:0/device:"
    "CPU:0;5dc4f3f3c3b2a1f0;/job:worker/replica:0/task:0/device:CPU:0;"
    "edge_9_test_weight1/Read/ReadVariableOp;0:0)"
)


def _processes(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"pid": r["pid"], "args": r.get("args", []), "env": r.get("env", {})} for r in rows]
    )


def _sockets(rows: list[tuple[int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"pid": pid, "local": local, "tcp_state": "LISTEN"} for pid, local in rows],
        columns=["pid", "local", "tcp_state"],
    )


def test_flags_in_both_spellings() -> None:
    args = ["python", "train.py", "--job_name", "ps", "--task_index=1"]
    assert flag(args, "job_name") == "ps"
    assert flag(args, "task_index") == "1"
    assert own_task(args, {}) == ("ps", 1)


def test_roles_from_flags_and_absent_members_are_kept() -> None:
    # GIVEN a cluster of 2 ps and 2 workers of which ps:1 is not in the dump
    hosts = [
        "--ps_hosts=127.0.0.1:2000,127.0.0.1:2001",
        "--worker_hosts=127.0.0.1:3000,127.0.0.1:3001",
    ]
    procs = _processes(
        [
            {"pid": 10, "args": ["python", "t.py", "--job_name=ps", "--task_index=0", *hosts]},
            {"pid": 20, "args": ["python", "t.py", "--job_name=worker", "--task_index=0", *hosts]},
            {"pid": 21, "args": ["python", "t.py", "--job_name=worker", "--task_index=1", *hosts]},
        ]
    )
    labels, members = build_cluster(procs, _sockets([]), "host")
    assert labels == {10: "ps:0", 20: "worker:0", 21: "worker:1"}
    absent = [m for m in members if not m.captured]
    assert [(m.role, m.address) for m in absent] == [("ps:1", "127.0.0.1:2001")]


def test_roles_from_tf_config_and_from_listening_port() -> None:
    cluster = {"ps": ["localhost:5000"], "worker": ["localhost:6000", "localhost:6001"]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    procs = _processes(
        [
            {"pid": 7, "args": ["python", "job.py"], "env": {"TF_CONFIG": tf_config}},
            # No flags, no TF_CONFIG of its own: known by the port it listens on.
            {"pid": 8, "args": ["python", "server.py"]},
        ]
    )
    labels, _ = build_cluster(procs, _sockets([(8, "127.0.0.1:5000")]), "host")
    assert labels == {7: "worker:1", 8: "ps:0"}


def test_role_from_device() -> None:
    assert role_from_device("/job:ps/replica:0/task:3/device:CPU:0") == "ps:3"
    assert role_from_device("/job:worker/replica:0/task:1") == "worker:1"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("with self._save_lock:", "self._save_lock"),
        ("with lock_a:", "lock_a"),
        ("self._mu.acquire()", "self._mu"),
        ("with open(path) as f:", ""),
        ("with tf.device('/cpu:0'):", ""),
        ("time.sleep(1)", ""),
    ],
)
def test_lock_expression(code: str, expected: str) -> None:
    assert lock_expression(code) == expected


def test_enclosing_with_blocks_are_the_locks_held() -> None:
    source = {
        "10": "    def after_save(self, session, step):",
        "11": "        with self.stats_lock:",
        "12": "            self.count += 1",
        "13": "            with open(self.path) as f:",
        "14": "                f.write('x')",
        "15": "            with self.train_lock:",
    }
    frame = Frame("Listener.after_save", "/x/hooks.py", 15, "with self.train_lock:", False)
    assert enclosing_with_locks({"/x/hooks.py": source}, frame) == ["self.stats_lock"]


def test_log_signatures() -> None:
    assert OVERSIZED.search(OVERSIZED_ERROR)
    match = RENDEZVOUS.search(OVERSIZED_ERROR)
    assert match is not None
    assert match.group(1).startswith("/job:ps/replica:0/task:0")
    assert "test_weight1" in match.group(3)
    line = (
        "I1123 13:00:00.000 grpc_session.cc CreateSession still waiting for response from "
        "worker: /job:ps/replica:0/task:0"
    )
    found = CREATE_SESSION_WAIT.search(line)
    assert found is not None and found.group(1) == "/job:ps/replica:0/task:0"
    step = STEP_LINE.search("INFO step 123 global_step 456")
    assert step is not None and step.group(1) == "123"


def _view(pid: int, stack: list[str], name: str = "MainThread", tid: int | None = None) -> Thread:
    frames = tuple(Frame(f, "/job/train.py", 1) for f in reversed(stack))
    return Thread(pid, pid if tid is None else tid, name, f"pid:{pid}", Status.STUCK,
                  WaitKind.SESSION_RUN, "SS", "", 0.0, 1.0, True, Stack(frames))


def test_the_replica_standing_elsewhere_is_the_outlier() -> None:
    # GIVEN four workers, three waiting in session.run and one reading input
    waiting = ["main", "train", "BaseSession.run", "_do_call", "_call_tf_sessionrun"]
    threads = [_view(pid, waiting) for pid in (1, 2, 3)] + [
        _view(4, ["main", "train", "next_batch", "read", "recv_into"])
    ]
    roles = {1: "worker:0", 2: "worker:1", 3: "worker:2", 4: "worker:3"}
    # WHEN the stacks are merged THEN two classes exist and worker:3 is the outlier
    classes = stack_classes(threads)
    assert [len(c.processes) for c in classes] == [3, 1]
    found = outliers(threads, roles)
    assert [role for role, _ in found] == ["worker:3"]
    assert "recv_into" in found[0][1]


def test_no_outlier_without_a_majority() -> None:
    threads = [_view(1, ["a", "b"]), _view(2, ["a", "c"])]
    assert outliers(threads, {1: "worker:0", 2: "worker:1"}) == []


def test_the_main_thread_is_named_so_else_the_thread_whose_tid_is_the_pid() -> None:
    named = _view(1, ["a"], name="MainThread", tid=7)
    leader = _view(1, ["b"], name="python", tid=1)
    other = _view(1, ["c"], name="worker", tid=9)
    assert main_thread([other, leader, named]) is named
    assert main_thread([other, leader]) is leader
    assert main_thread([other]) is None


@pytest.mark.parametrize("line", [
    OVERSIZED_ERROR,
    "I1123 13:00:00 CreateSession still waiting for response from worker: /job:ps/replica:0/task:0",
    "E1123 13:00:00.1 grpc failure",
    "F1123 13:00:00.1 check failed",
    "2024-01-01 12:00:00,000 123 MainThread ERROR boom",
    "tensorflow.python.framework.errors_impl.UnavailableError: failed to connect to all addresses",
    "Additional GRPC error information from remote target /job:ps/replica:0/task:0",
    '  File "/usr/lib/python3/site-packages/tensorflow/python/training/saver.py", line 1, in save',
    "INFO:tensorflow:Saving checkpoints for 300 into /ckpt/model.ckpt.",
    "Traceback (most recent call last):",
    "ValueError: bad",
    "Received message larger than max (4194305 vs. 4194304)",
])
def test_the_cheap_log_filter_lets_every_notable_line_through(line: str) -> None:
    from postmortem.analysis.logs import NOTABLE, notable

    assert NOTABLE.search(line) and notable(line)


def test_the_cheap_log_filter_never_drops_what_the_patterns_match() -> None:
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    from postmortem.analysis.logs import NOTABLE, notable

    words = st.sampled_from(["Error:", "save", "Saving checkpoint to path", "E0101 ", "step",
                             "Connection refused", "2GB", "x", " ", "Exception:", "F1234 ",
                             "\n", "heartbeats", "has been recovered", "checkpoint.py"])

    @settings(max_examples=300, deadline=None)
    @example(["\n", "E0101 "])  # a glog error line after a newline (found by hypothesis)
    @given(st.lists(st.one_of(words, st.text(max_size=8)), max_size=8))
    def check(parts: list[str]) -> None:
        line = "".join(parts)
        if NOTABLE.search(line):
            assert notable(line), line

    check()
