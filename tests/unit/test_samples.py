"""Golden verdicts: every committed sample's class and culprit match its truth.json.

The samples are dumps of real hangs (samples/README.md). The analyzer sees only the dump;
truth.json is what the scenario injected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from postmortem.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SAMPLE_DIRS = sorted(p for p in SAMPLES.iterdir() if (p / "manifest.json").exists())


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
    if truth["culprit_role"] is not None:
        assert verdict["blocking_op"]


def test_verdict_does_not_depend_on_the_dump_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a sample copied under a meaningless name, without its truth file
    import shutil

    source = SAMPLES / "ps-frozen-during-save"
    copy = tmp_path / "dump-x"
    shutil.copytree(source, copy)
    (copy / "truth.json").unlink()
    # WHEN analyzed THEN the verdict is the same
    assert main(["analyze", str(copy), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["verdict"]
    assert verdict["hang_class"] == "peer-unresponsive"
    assert verdict["culprit"]["role"] == "ps:0"
