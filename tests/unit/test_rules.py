"""Each rule on hand-built facts: the situation it names, and the near miss it must not.

The facts are built directly (threads, member health, logs, checkpoint progress), so each
test states exactly what a rule sees; the samples test the whole chain on real dumps.
"""

from __future__ import annotations

from pathlib import Path

from postmortem.analysis import rank
from postmortem.analysis.logs import read_log
from postmortem.analysis.rules import (
    RULES,
    lock_deadlock,
    oversized_tensor,
    peer_unreachable,
    peer_unresponsive,
    save_progressing,
    storage_stall,
    training_stalled,
)
from postmortem.model import (
    CheckpointProgress,
    Culprit,
    Finding,
    Frame,
    HangClass,
    Member,
    Stack,
    Status,
    Thread,
    WaitKind,
)
from tests.conftest import SAVER, SESSION, hand_facts

PS0 = Member("ps:0", "ps", 0, "127.0.0.1:2222", 10, "h")
W0 = Member("worker:0", "worker", 0, "127.0.0.1:2223", 20, "h")
W1 = Member("worker:1", "worker", 1, "127.0.0.1:2224", 21, "h")
SAVE = Stack((
    Frame("_call_tf_sessionrun", SESSION, 1477), Frame("BaseSession.run", SESSION, 977),
    Frame("Saver.save", SAVER, 1300), Frame("main", "/job/train.py", 80),
))
TRAIN = Stack((
    Frame("_call_tf_sessionrun", SESSION, 1477), Frame("BaseSession.run", SESSION, 977),
    Frame("main", "/job/train.py", 60),
))


def thread(member: Member, stack: Stack, status: Status = Status.STUCK,
           waits_on: WaitKind = WaitKind.SESSION_RUN, name: str = "MainThread",
           tid: int | None = None, states: str = "SSS", wchan: str = "",
           lock_expr: str = "") -> Thread:
    assert member.pid is not None
    return Thread(member.pid, tid or member.pid, name, member.role, status, waits_on, states,
                  wchan, 0.0, 3.0, True, stack, lock_expr=lock_expr,
                  in_save=any(f.function == "Saver.save" for f in stack))


def stopped(member: Member) -> Member:
    return Member(member.role, member.job, member.task, member.address, member.pid, member.host,
                  ("stopped (state T in all 3 rounds: SIGSTOP or a debugger)",))


def test_every_rule_declares_its_class_and_only_finds_that(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [stopped(PS0), W0], threads=[thread(W0, SAVE)])
    assert {r.hang_class for r in RULES} >= {
        HangClass.PEER_UNRESPONSIVE, HangClass.STORAGE_STALL, HangClass.TRAINING_STALLED,
        HangClass.LOCK_DEADLOCK, HangClass.PEER_UNREACHABLE, HangClass.SAVE_PROGRESSING,
        HangClass.OVERSIZED_TENSOR_TRANSFER}
    for rule in RULES:
        assert all(f.hang_class is rule.hang_class for f in rule.evaluate(facts)), rule.name


def test_a_save_waiting_on_a_stopped_ps_names_the_ps(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [stopped(PS0), W0], threads=[thread(W0, SAVE)])
    (finding,) = peer_unresponsive.evaluate(facts)
    assert finding.culprit is not None and finding.culprit.role == "ps:0"
    assert "Saver.save" in finding.blocking_op and finding.confidence >= 0.9


def test_a_save_waiting_with_every_peer_healthy_is_not_peer_unresponsive(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [PS0, W0], threads=[thread(W0, SAVE)])
    assert peer_unresponsive.evaluate(facts) == []


def test_training_waiting_on_a_stopped_replica_while_saves_complete(tmp_path: Path) -> None:
    log = read_log("worker:0", 20, "processes/20/logs/stderr.txt", [
        "INFO step 10 global_step 30", "INFO Saving checkpoint to path /c/model.ckpt",
        "INFO Saving checkpoint to path /c/model.ckpt"])
    queue = Stack((Frame("_call_tf_sessionrun", SESSION, 1), Frame("QueueRunner._run", "/q.py", 2)))
    facts = hand_facts(
        tmp_path, [PS0, W0, stopped(W1)],
        threads=[thread(W0, TRAIN), thread(W0, queue, name="QueueRunnerThread-sync_token_q",
                                             tid=99)],
        logs={"worker:0": log})
    (finding,) = training_stalled.evaluate(facts)
    assert finding.culprit is not None and finding.culprit.role == "worker:1"
    assert "sync-replica" in finding.blocking_op and finding.confidence >= 0.9


def test_no_training_stall_when_no_training_thread_is_stuck(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [PS0, W0, stopped(W1)],
                       threads=[thread(W0, TRAIN, status=Status.PARKED)])
    assert training_stalled.evaluate(facts) == []


def _checkpoint(sizes: tuple[int, ...]) -> CheckpointProgress:
    return CheckpointProgress("/ckpt", tuple(range(len(sizes))),
                              tuple(float(i) for i in range(len(sizes))), sizes, (), (), "")


def test_a_writer_in_d_with_the_checkpoint_not_growing_is_a_storage_stall(tmp_path: Path) -> None:
    writer = thread(W0, Stack(), name="tf_Compute", tid=77, states="DDD",
                    wchan="request_wait_answer", waits_on=WaitKind.IO)
    facts = hand_facts(tmp_path, [PS0, W0], threads=[writer, thread(W0, SAVE)],
                       checkpoints=[_checkpoint((100, 100, 100))])
    (finding,) = storage_stall.evaluate(facts)
    assert finding.culprit is not None and finding.culprit.role == "worker:0"
    assert finding.confidence >= 0.8


def test_a_writer_in_d_whose_checkpoint_grows_is_a_slow_save(tmp_path: Path) -> None:
    writer = thread(W0, Stack(), name="tf_Compute", tid=77, states="DDD",
                    wchan="io_schedule", waits_on=WaitKind.IO)
    facts = hand_facts(tmp_path, [PS0, W0], threads=[writer, thread(W0, SAVE)],
                       checkpoints=[_checkpoint((100, 5_000_000, 9_000_000))])
    assert storage_stall.evaluate(facts) == []
    (finding,) = save_progressing.evaluate(facts)
    assert finding.culprit is None and "MB/s" in finding.summary


def test_a_save_with_nothing_watched_and_no_writes_is_not_progressing(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [PS0, W0], threads=[thread(W0, SAVE)], write_rates={20: 10.0})
    assert save_progressing.evaluate(facts) == []


def test_two_threads_holding_each_others_lock_are_a_deadlock(tmp_path: Path) -> None:
    code = {"/job/t.py": {"10": "def main():", "11": "    with lock_a:",
                          "12": "        with lock_b:", "20": "def saver():",
                          "21": "    with lock_b:", "22": "        with lock_a:"}}
    main = thread(W0, Stack((Frame("main", "/job/t.py", 12, "with lock_b:"),)),
                  waits_on=WaitKind.LOCK, lock_expr="lock_b")
    saver = thread(W0, Stack((Frame("saver", "/job/t.py", 22, "with lock_a:"),)),
                   waits_on=WaitKind.LOCK, lock_expr="lock_a", name="saver", tid=21)
    facts = hand_facts(tmp_path, [W0], threads=[main, saver])
    facts.dump.sources[20] = code
    (finding,) = lock_deadlock.evaluate(facts)
    assert finding.confidence >= 0.9 and "held by saver" in finding.blocking_op


def test_create_session_still_waiting_names_the_task(tmp_path: Path) -> None:
    line = ("I1123 13:00:00.000 CreateSession still waiting for response from worker: "
            "/job:ps/replica:0/task:1")
    ps1 = Member("ps:1", "ps", 1, "127.0.0.1:2225", None, "h", ("not running",))
    facts = hand_facts(tmp_path, [PS0, ps1, W0],
                       logs={"worker:0": read_log("worker:0", 20, "x", [line, line])})
    (finding,) = peer_unreachable.evaluate(facts)
    assert finding.culprit is not None and finding.culprit.role == "ps:1"


def test_the_2gb_error_names_the_variable_and_its_ps(tmp_path: Path) -> None:
    error = ("InternalError: Cannot encode a Tensor that exceeds the 2GB protobuf limit. "
             "Exceeded bytes: 8516352 (rendezvous_key: /job:ps/replica:0/task:0/device:CPU:0;"
             "5dc4;/job:worker/replica:0/task:0/device:CPU:0;edge_9_emb/Read/ReadVariableOp;0:0)")
    facts = hand_facts(tmp_path, [PS0, W0],
                       logs={"worker:0": read_log("worker:0", 20, "x", [error])})
    (finding,) = oversized_tensor.evaluate(facts)
    assert finding.culprit is not None and finding.culprit.role == "ps:0"
    assert "`emb`" in finding.blocking_op


def _finding(cls: HangClass, confidence: float, role: str) -> Finding:
    return Finding(cls, confidence, "s", "f", Culprit(role, 1, "h"))


def test_a_stopped_ps_explains_a_training_stall(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [PS0, W0])
    ranked = rank([_finding(HangClass.TRAINING_STALLED, 0.9, "worker:1"),
                   _finding(HangClass.PEER_UNRESPONSIVE, 0.7, "ps:0")], facts)
    assert [f.hang_class for f in ranked] == [HangClass.PEER_UNRESPONSIVE,
                                              HangClass.TRAINING_STALLED]
    assert ranked[1].explained_by is HangClass.PEER_UNRESPONSIVE
    assert ranked[1].confidence < ranked[0].confidence


def test_a_stalled_training_loop_explains_a_stopped_replica(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [PS0, W0], threads=[thread(W0, TRAIN)])
    ranked = rank([_finding(HangClass.PEER_UNRESPONSIVE, 0.9, "worker:1"),
                   _finding(HangClass.TRAINING_STALLED, 0.8, "worker:1")], facts)
    assert ranked[0].hang_class is HangClass.TRAINING_STALLED
    assert ranked[1].explained_by is HangClass.TRAINING_STALLED
