"""Golden verdicts: every committed sample's class, culprit and blocking op match its
truth.json, and every piece of evidence cites a file the dump really holds.

The samples are dumps of real hangs (samples/README.md). The analyzer sees only the dump;
truth.json is what the scenario injected.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import postmortem
from postmortem.cli import main
from postmortem.model import HangClass
from tests.conftest import SAMPLES, sample_dumps

SAMPLE_DIRS = sample_dumps()


def test_there_are_samples_of_every_class() -> None:
    classes = {json.loads((p / "truth.json").read_text())["hang_class"] for p in SAMPLE_DIRS}
    assert classes >= {
        "oversized-tensor-transfer",
        "peer-unresponsive",
        "storage-stall",
        "training-stalled",
        "lock-deadlock",
        "peer-unreachable",
        "save-progressing",
        "healthy",
        "degraded",
    }


@pytest.mark.parametrize("sample", SAMPLE_DIRS, ids=lambda p: p.name)
def test_verdict_matches_truth(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = json.loads((sample / "truth.json").read_text())
    assert main(["analyze", str(sample), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["verdict"]
    assert verdict["hang_class"] == truth["hang_class"]
    culprit = verdict["culprit"]
    assert (culprit["role"] if culprit else None) == truth["culprit_role"]
    assert verdict["summary"] and verdict["fix"]
    for term in truth["op_terms"]:
        assert term in verdict["blocking_op"], (term, verdict["blocking_op"])


@pytest.mark.parametrize("sample", SAMPLE_DIRS, ids=lambda p: p.name)
def test_every_evidence_row_cites_a_file_of_the_dump(sample: Path) -> None:
    incident = postmortem.analyze(postmortem.load(sample))
    rows = [e for f in incident.verdict.findings for e in f.evidence]
    if incident.verdict.hang_class is not HangClass.NO_HANG_FOUND:
        assert rows, "a verdict without evidence"
    for evidence in rows:
        assert (sample / evidence.source).is_file(), (evidence.source, evidence.what)
    for member in incident.members:
        if member.problems:
            assert (sample / member.problems_source).is_file(), member


def test_verdict_does_not_depend_on_the_dump_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a sample copied under a meaningless name, without its truth file
    source = SAMPLES / "ps-frozen-during-save"
    copy = tmp_path / "dump-x"
    shutil.copytree(source, copy)
    (copy / "truth.json").unlink()
    # WHEN analyzed THEN the verdict is the same
    assert main(["analyze", str(copy), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["verdict"]
    assert verdict["hang_class"] == "peer-unresponsive"
    assert verdict["culprit"]["role"] == "ps:0"


def test_a_dump_of_schema_1_still_loads_and_judges_the_same() -> None:
    # GIVEN a dump written before the watch between rounds existed (no wakeup counts)
    old = Path(__file__).resolve().parents[1] / "data" / "schema-1" / "ps-frozen-during-save"
    incident = postmortem.analyze(postmortem.load(old))
    # THEN it is read as schema 1 and judged from stacks and CPU, as it always was
    assert incident.dump.schema_version == 1
    assert incident.verdict.hang_class is HangClass.PEER_UNRESPONSIVE
    assert incident.verdict.culprit is not None and incident.verdict.culprit.role == "ps:0"
    saver = next(t for t in incident.threads if t.in_save)
    assert saver.wakeups is None and "no wakeup counts" in saver.decided_by


RECORDED = [p for p in SAMPLE_DIRS if any(p.glob("processes/*/flight.json"))]


@pytest.mark.parametrize("sample", RECORDED, ids=lambda p: p.name)
def test_recorded_samples_use_their_flight_files(sample: Path, tmp_path: Path) -> None:
    # GIVEN a sample whose job ran the flight recorder
    incident = postmortem.analyze(postmortem.load(sample))
    assert incident.flights, "flight.json in the dump but no flight record"
    cited = {e.source for f in incident.verdict.findings for e in f.evidence}
    assert any(s.endswith("flight.json") for s in cited), "the verdict cites no flight file"
    # WHEN its flight files are removed THEN the verdict loses what they showed: a job that
    # logged no step is no longer seen to progress
    copy = tmp_path / "copy"
    shutil.copytree(sample, copy)
    for path in copy.glob("processes/*/flight.json"):
        path.unlink()
    without = postmortem.analyze(postmortem.load(copy))
    assert not without.flights
    truth = json.loads((sample / "truth.json").read_text())
    if truth["params"].get("log_format") == "none":
        assert without.verdict.hang_class is not HangClass.HEALTHY


def test_there_are_recorded_samples_of_a_hang_and_of_a_healthy_job() -> None:
    classes = {json.loads((p / "truth.json").read_text())["hang_class"] for p in RECORDED}
    assert "healthy" in classes and classes - {"healthy", "degraded"}


@pytest.mark.parametrize("sample", SAMPLE_DIRS, ids=lambda p: p.name)
def test_the_strategy_is_read_from_the_dump(sample: Path) -> None:
    # truth.json says how the scenario's job distributed; the analysis reads it from the
    # stacks, thread names, logs or command lines, never from truth.json
    truth = json.loads((sample / "truth.json").read_text())
    incident = postmortem.analyze(postmortem.load(sample))
    assert incident.strategy.value == truth["strategy"], incident.strategy_evidence
    assert incident.strategy_evidence
