"""Progress over the capture: when log lines were written, steps per log, wakeups per thread.

Hand-built inputs shaped like a schema-2 dump's: log lines with their end offsets, the log's
size at each round, watch records between rounds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from postmortem.analysis.progress import Placed, overdue, place_lines, step_progress
from postmortem.analysis.rules import degraded, healthy
from postmortem.analysis.threads import judge
from postmortem.model import LogProgress, Member, Status, WaitKind
from tests.conftest import hand_facts

T0 = 1_700_000_000.0


def _lines(texts: list[str], start: int = 0) -> pd.DataFrame:
    rows, offset = [], start
    for number, text in enumerate(texts):
        offset += len(text) + 1
        rows.append({"pid": 7, "stream": "stderr", "line_no": number, "text": text,
                     "offset": offset})
    return pd.DataFrame(rows)


def test_untimed_lines_are_placed_between_the_rounds_that_saw_the_log_reach_them() -> None:
    # GIVEN TF's own lines (no timestamp): 2 before the capture, 2 between rounds 0 and 1,
    # 1 after the last round
    texts = ["INFO:tensorflow:loss = 1.0, step = 10", "INFO:tensorflow:loss = 1.0, step = 20",
             "INFO:tensorflow:loss = 1.0, step = 30", "INFO:tensorflow:loss = 1.0, step = 40",
             "INFO:tensorflow:loss = 1.0, step = 50"]
    lines = _lines(texts)
    ends = list(lines["offset"])
    sizes = pd.DataFrame([
        {"pid": 7, "stream": "stderr", "round": 0, "time": T0, "size": ends[1]},
        {"pid": 7, "stream": "stderr", "round": 1, "time": T0 + 1, "size": ends[3]},
    ])
    # WHEN placed
    placed = place_lines(lines, sizes, [(0, T0), (1, T0 + 1)], T0 + 2, 2023)
    got = [placed[(7, "stderr", n)] for n in range(5)]
    # THEN before the capture: no time; between rounds: inside that window, in order
    assert [p.during for p in got] == [False, False, True, True, True]
    assert got[0].time is None
    assert T0 < got[2].time < got[3].time < T0 + 1  # type: ignore[operator]
    assert T0 + 1 < got[4].time < T0 + 2  # type: ignore[operator]
    assert all(p.estimated for p in got[2:])


def test_timestamped_lines_keep_their_own_time() -> None:
    lines = _lines(["2023-11-14 22:13:20,500 1 MainThread INFO step 3"])
    placed = place_lines(lines, pd.DataFrame(), [(0, T0)], T0 + 1, 2023)[(7, "stderr", 0)]
    assert placed.time is not None and not placed.estimated


def _placed(during: bool | None, time: float | None = None) -> Placed:
    return Placed(time, False, during)


def test_steps_in_the_window_and_the_rate_tensorflow_logged() -> None:
    texts = [("INFO:tensorflow:loss = 1, step = 100", _placed(False, T0 - 1)),
             ("INFO:tensorflow:global_step/sec: 42.5", _placed(True, T0 + 0.5)),
             ("INFO:tensorflow:loss = 1, step = 160", _placed(True, T0 + 1.5))]
    got = step_progress("worker:0", 7, "x", texts, (T0, T0 + 2))
    assert got is not None and got.moved and got.steps_in_window == 60
    assert got.rate == 42.5 and got.last_step == 160
    assert got.last_step_age_s == pytest.approx(0.5)


def test_a_log_silent_for_many_of_its_usual_gaps_is_overdue() -> None:
    texts = [(f"step {n}", _placed(False, T0 - 30 + n * 0.5)) for n in range(10)]
    got = step_progress("worker:0", 7, "x", texts, (T0, T0 + 3))
    assert got is not None and not got.moved and overdue(got)


@pytest.mark.parametrize(
    ("waits", "wakeups", "same", "expected"),
    [
        (WaitKind.SESSION_RUN, 0, True, Status.STUCK),  # blocked for good
        (WaitKind.SESSION_RUN, 40, True, Status.ACTIVE),  # returns 20 times a second
        (WaitKind.LOCK, 0, True, Status.STUCK),
        (WaitKind.SESSION_CREATE, 1, True, Status.STUCK),  # the 10 s "still waiting" poll
        (WaitKind.SESSION_RUN, 0, False, Status.PARKED),
        (WaitKind.QUEUE, 30, True, Status.PARKED),
        (WaitKind.IO, 0, True, Status.STUCK),  # a writer in a hung mount
        (WaitKind.IO, 25, True, Status.ACTIVE),  # a slow writer
    ],
)
def test_stuck_needs_no_wakeup_in_the_watch(
    waits: WaitKind, wakeups: int, same: bool, expected: Status
) -> None:
    status, why = judge("SSS", 0.0, 3.0, "S", waits, same, 6, wakeups, 2.0, False)
    assert status is expected, why
    assert why


def test_a_dump_without_wakeup_counts_falls_back_to_the_stack_and_cpu() -> None:
    status, why = judge("SSS", 0.0, 3.0, "S", WaitKind.SESSION_RUN, True, 3, None, 0.0, False)
    assert status is Status.STUCK and "no wakeup counts" in why


def _progress(role: str, pid: int, steps: int) -> LogProgress:
    return LogProgress(role, pid, f"processes/{pid}/logs/stderr.txt", steps, 3,
                       20.0 if steps else None, 500, 0.2, 0.5, 3.0)


W0 = Member("worker:0", "worker", 0, "127.0.0.1:2", 20, "h")
W1 = Member("worker:1", "worker", 1, "127.0.0.1:3", 21, "h")
PS = Member("ps:0", "ps", 0, "127.0.0.1:1", 10, "h")


def test_steps_on_every_worker_and_no_member_down_is_healthy(tmp_path: Path) -> None:
    facts = hand_facts(tmp_path, [PS, W0, W1],
                       progress=[_progress("worker:0", 20, 40), _progress("worker:1", 21, 35)])
    (finding,) = healthy.evaluate(facts)
    assert finding.confidence >= 0.8 and finding.culprit is None
    assert "20.0/s" in finding.summary
    assert degraded.evaluate(facts) == []


def test_a_stopped_worker_while_the_others_step_is_degraded(tmp_path: Path) -> None:
    down = Member("worker:1", "worker", 1, "127.0.0.1:3", 21, "h", ("stopped (state T)",))
    facts = hand_facts(tmp_path, [PS, W0, down],
                       progress=[_progress("worker:0", 20, 40), _progress("worker:1", 21, 0)])
    assert healthy.evaluate(facts) == []
    (finding,) = degraded.evaluate(facts)
    assert finding.culprit is not None and finding.culprit.role == "worker:1"
    assert "goes on without it" in finding.summary


def test_no_step_anywhere_is_neither_healthy_nor_degraded(tmp_path: Path) -> None:
    down = Member("worker:1", "worker", 1, "127.0.0.1:3", 21, "h", ("stopped (state T)",))
    facts = hand_facts(tmp_path, [PS, W0, down], progress=[_progress("worker:0", 20, 0)])
    assert healthy.evaluate(facts) == [] and degraded.evaluate(facts) == []
