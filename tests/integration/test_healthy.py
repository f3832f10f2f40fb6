"""Healthy and degraded jobs, live: never a false alarm.

Each case starts a real cluster that trains normally (or loses a worker and goes on
without it), captures it with the real CLI twice (--samples 3 and --samples 1), and
analyzes both. A healthy job must be judged `healthy` from three rounds and must never be
called stuck (any hang class) from one; a degraded job must name the lost worker. The slow
suite runs every healthy shape five times: the false-alarm rate in docs/accuracy.md comes
from these runs.

Run: python -m pytest tests/integration/test_healthy.py -m slow -p no:cacheprovider
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postmortem.model import HangClass
from postmortem.scenarios import get_scenario
from tests.conftest import REPO

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
HAVE_PYSPY = shutil.which("py-spy") is not None
FAILURES = Path(os.environ.get("POSTMORTEM_FAILURES_DIR", "/tmp/postmortem-variation-failures"))
RUNS = int(os.environ.get("POSTMORTEM_HEALTHY_RUNS", "5"))
# One JSON line per capture judged, for docs/accuracy.md's false-alarm table.
RESULTS = Path(os.environ.get("POSTMORTEM_HEALTHY_RESULTS",
                              "/tmp/postmortem-healthy-results.jsonl"))
NOT_STUCK = {c.value for c in HangClass if not c.is_hang}


@dataclass(frozen=True)
class Shape:
    id: str
    scenario: str
    params: dict[str, Any] = field(default_factory=dict)
    discover: bool = False
    expected: str = "healthy"
    culprit: str | None = None
    ci: bool = False


HEALTHY = [
    Shape("async-mts", "healthy-training"),
    Shape("sync-replicas-supervisor-discover", "healthy-training", {"mode": "sync"},
          discover=True, ci=True),
    Shape("sharded-128mb-save-every-2s", "healthy-training",
          {"vars": ["embedding:1000000x32"], "save_secs": 2.0}),
    Shape("cpu-bound-no-step-sleep", "healthy-training",
          {"step_sleep": 0.0, "log_format": "timestamped"}),
    Shape("async-3-workers-2-ps-discover", "healthy-training",
          {"num_ps": 2, "num_workers": 3, "step_sleep": 0.02}, discover=True),
    # no step line at all: only the job's flight recorder shows it trains
    Shape("async-no-step-logs-recorder", "healthy-training",
          {"recorder": True, "log_format": "none"}),
    # TF2: MultiWorkerMirroredStrategy, every worker saves; found by TF_CONFIG
    Shape("mwms-3-workers-all-save-discover", "mwms-healthy-training",
          {"num_workers": 3, "save_every_steps": 20}, discover=True),
    # TF2: tf_keras fit, ModelCheckpoint on every worker, a sidecar evaluator; --discover
    Shape("keras-fit-evaluator-discover", "mwms-keras-fit-healthy",
          {"evaluator": True, "save_freq": 30}, discover=True),
]
DEGRADED = [
    Shape("async-worker1-stopped", "degraded-worker-lost", {"fault": "stop"},
          expected="degraded", culprit="worker:1", ci=True),
    Shape("sync-backup-worker2-killed", "degraded-worker-lost",
          {"mode": "sync", "num_workers": 3, "culprit": "worker:2", "fault": "kill"},
          expected="degraded", culprit="worker:2"),
    Shape("async-worker1-stopped-recorder", "degraded-worker-lost",
          {"fault": "stop", "recorder": True}, expected="degraded", culprit="worker:1"),
]


def capture(run: Any, dump: Path, samples: int, discover: bool) -> None:
    argv = [sys.executable, "-m", "postmortem", "capture", "-o", str(dump), "--force",
            "--samples", str(samples), "--interval", "1"]
    if discover:
        argv.append("--discover")
    else:
        for pid in run.pids.values():
            argv += ["--pid", str(pid)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]


def verdict(dump: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "postmortem", "analyze", str(dump), "--json"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def keep(case: str, dump: Path, document: dict[str, Any]) -> Path:
    kept = FAILURES / case
    if kept.exists():
        shutil.rmtree(kept)
    shutil.copytree(dump, kept)
    (kept / "analyzer.json").write_text(json.dumps(document, indent=1) + "\n")
    return kept


def run_shape(shape: Shape, tmp_path: Path, attempt: int) -> None:
    scenario = get_scenario(shape.scenario)
    case = f"{shape.id}-{attempt}"
    with scenario.start(tmp_path / shape.id, **shape.params) as run:
        run.wait_established(timeout=240)
        three, one = tmp_path / "dump-3", tmp_path / "dump-1"
        capture(run, three, 3, shape.discover)
        capture(run, one, 1, shape.discover)
        truth = run.truth
    assert truth["hang_class"] == shape.expected
    for dump, rounds in ((three, 3), (one, 1)):
        document = verdict(dump)
        v = document["verdict"]
        got = v["hang_class"]
        role = v["culprit"]["role"] if v["culprit"] else None
        with RESULTS.open("a") as results:
            results.write(json.dumps({"shape": shape.id, "attempt": attempt, "samples": rounds,
                                      "expected": shape.expected, "got": got, "culprit": role,
                                      "confidence": v["confidence"]}) + "\n")
        if rounds == 3:
            ok = got == shape.expected and role == shape.culprit
        else:
            # One round: the verdict may say less, but must never call it stuck.
            ok = got in NOT_STUCK and (got != "degraded" or role == shape.culprit)
        if not ok:
            kept = keep(f"{case}-samples{rounds}", dump, document)
            pytest.fail(f"{shape.id} run {attempt}, --samples {rounds}: expected "
                        f"{shape.expected}/{shape.culprit}, got {got}/{role} "
                        f"({v['summary']}); dump kept at {kept}")


def _marks(shape: Shape) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.live, pytest.mark.slow, pytest.mark.timeout(420),
             pytest.mark.skipif(not (HAVE_TF and HAVE_PYSPY), reason="needs tensorflow, py-spy")]
    return [*marks, pytest.mark.ci] if shape.ci else marks


@pytest.mark.parametrize("shape", [pytest.param(s, id=s.id, marks=_marks(s)) for s in HEALTHY])
def test_a_healthy_job_is_healthy(shape: Shape, tmp_path: Path) -> None:
    run_shape(shape, tmp_path, 0)


@pytest.mark.parametrize("attempt", range(1, RUNS))
@pytest.mark.parametrize(
    "shape",
    [pytest.param(s, id=s.id, marks=[m for m in _marks(s) if m.name != "ci"]) for s in HEALTHY],
)
def test_a_healthy_job_is_never_a_false_alarm(shape: Shape, tmp_path: Path, attempt: int) -> None:
    run_shape(shape, tmp_path, attempt)


@pytest.mark.parametrize("shape", [pytest.param(s, id=s.id, marks=_marks(s)) for s in DEGRADED])
def test_a_job_that_goes_on_without_a_worker_is_degraded(shape: Shape, tmp_path: Path) -> None:
    run_shape(shape, tmp_path, 0)
