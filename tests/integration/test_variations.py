"""Live variations the committed samples do not show: each case runs a real scenario with
non-default parameters through `postmortem demo NAME --set k=v ...` (start, inject, capture
with the real CLI, stop), then `postmortem analyze DUMP --json`, and compares the verdict's
hang class and culprit role with the dump's truth.json (what the scenario injected).

On failure the analyzer's full JSON is printed and the dump is copied to
/tmp/postmortem-variation-failures/<case>/ (named in the failure message). Results and the
command to reproduce each case: docs/accuracy.md.

Run: python -m pytest tests/integration/test_variations.py -m slow -p no:cacheprovider
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

REPO = Path(__file__).resolve().parents[2]
FAILURES = Path(os.environ.get("POSTMORTEM_FAILURES_DIR", "/tmp/postmortem-variation-failures"))
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
HAVE_PYSPY = shutil.which("py-spy") is not None
HAVE_FUSE = (
    importlib.util.find_spec("fuse") is not None
    and shutil.which("fusermount3") is not None
    and os.path.exists("/dev/fuse")
)
DEMO_TIMEOUT = 270  # seconds for the whole `postmortem demo` child; the test allows 300
ESTABLISH_TIMEOUT = 180


@dataclass(frozen=True)
class Case:
    id: str
    scenario: str
    params: dict[str, Any]
    expected_class: str
    expected_culprit: str | None
    fuse: bool = False
    ci: bool = False
    # checks of the dump itself: (role that must be absent from the dump, ...)
    absent: tuple[str, ...] = field(default=())

    def set_args(self) -> list[str]:
        out: list[str] = []
        for key, value in self.params.items():
            text = value if isinstance(value, str) else json.dumps(value)
            out += ["--set", f"{key}={text}"]
        return out

    def command(self, dump: str = "DUMP") -> str:
        sets = " ".join(
            f"--set '{a}'" if "[" in a or " " in a else f"--set {a}"
            for a in self.set_args()[1::2]
        )
        return f"postmortem demo {self.scenario} -o {dump} {sets}".strip()


CASES = [
    Case("ps-frozen-2ps-2w-ps1-vars", "ps-frozen-during-save",
         {"num_ps": 2, "num_workers": 2, "culprit": "ps:1",
          "vars": ["user_embedding:20000x16", "item_embedding:30000x8"]},
         "peer-unresponsive", "ps:1"),
    Case("ps-killed-during-save", "ps-frozen-during-save", {"fault": "kill"},
         "peer-unresponsive", "ps:0", absent=("ps:0",)),
    Case("sync-3w-kill-worker2", "sync-replicas-stall",
         {"num_workers": 3, "culprit": "worker:2", "fault": "kill"},
         "training-stalled", "worker:2", absent=("worker:2",)),
    Case("sync-3w-stop-worker1", "sync-replicas-stall",
         {"num_workers": 3, "culprit": "worker:1", "fault": "stop"},
         "training-stalled", "worker:1"),
    Case("lock-deadlock-thread-name", "saver-lock-deadlock",
         {"saver_thread_name": "async-ckpt-writer"},
         "lock-deadlock", "worker:0", ci=True),
    # a small variable first so that, round-robin over 2 ps, the 2.16 GB one lands on ps:1
    Case("oversized-2ps-huge-embedding", "oversized-variable-save",
         {"num_ps": 2, "vars": ["small_table:10x2", "huge_embedding:540000000x1"]},
         "oversized-tensor-transfer", "ps:1"),
    Case("unreachable-2ps-ps1", "ps-unreachable-at-startup",
         {"num_ps": 2, "culprit": "ps:1"},
         "peer-unreachable", "ps:1", ci=True, absent=("ps:1",)),
    Case("storage-stall-2w", "storage-stall", {"num_workers": 2},
         "storage-stall", "worker:0", fuse=True),
    # the jobs run postmortem.recorder: the same verdicts, with the job's own record
    Case("oversized-recorded", "oversized-variable-save", {"recorder": True},
         "oversized-tensor-transfer", "ps:0"),
    Case("lock-deadlock-recorded", "saver-lock-deadlock", {"recorder": True},
         "lock-deadlock", "worker:0"),
    Case("storage-stall-recorded", "storage-stall", {"recorder": True},
         "storage-stall", "worker:0", fuse=True),
    Case("healthy-slow-save-512mb-8mbps", "healthy-slow-save",
         {"vars": ["embedding:4000000x32"], "write_bytes_per_sec": 8_000_000},
         "save-progressing", None, fuse=True),
    # TF2 strategies (TF_CONFIG, no cluster flags)
    Case("mwms-3w-worker2-skips", "mwms-partial-save",
         {"num_workers": 3, "skip_save": "worker:2"}, "collective-mismatch", "worker:2"),
    Case("mwms-skipper-evaluates", "mwms-partial-save",
         {"skip_action": "evaluate"}, "collective-mismatch", "worker:1"),
    Case("mwms-3w-manager-two-skip", "mwms-partial-save",
         {"num_workers": 3, "skip_save": "worker:1,worker:2", "api": "manager"},
         "collective-mismatch", "worker:1"),
    Case("mwms-recorded", "mwms-partial-save", {"recorder": True},
         "collective-mismatch", "worker:1"),
    Case("mwms-3w-worker2-lost", "mwms-peer-lost-during-save",
         {"num_workers": 3, "culprit": "worker:2"}, "peer-unresponsive", "worker:2",
         absent=("worker:2",)),
    Case("keras-fit-3w-worker1-saves", "mwms-keras-fit-chief-save",
         {"num_workers": 3, "save_on": "worker:1", "save_freq": 25}, "collective-mismatch",
         "worker:0"),
    Case("keras-fit-two-save-evaluator", "mwms-keras-fit-chief-save",
         {"num_workers": 3, "save_on": "worker:0,worker:2", "evaluator": True},
         "collective-mismatch", "worker:1"),
    Case("pss-2ps-ps1-frozen", "pss-ps-frozen-during-save",
         {"num_ps": 2, "num_workers": 2, "culprit": "ps:1"}, "peer-unresponsive", "ps:1"),
]


# -- helpers shared in spirit with test_demo.py ------------------------------------------------
def run_demo(scenario: str, dump: Path, set_args: list[str],
             timeout: float = DEMO_TIMEOUT) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "postmortem", "demo", scenario, "-o", str(dump), "--force",
            "--timeout", str(ESTABLISH_TIMEOUT), *set_args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          check=False)


def analyze(dump: Path) -> tuple[int, dict[str, Any] | None, str]:
    out = subprocess.run([sys.executable, "-m", "postmortem", "analyze", str(dump), "--json"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    try:
        doc = json.loads(out.stdout) if out.returncode == 0 else None
    except json.JSONDecodeError:
        doc = None
    return out.returncode, doc, out.stderr


def keep_failed_dump(case_id: str, dump: Path) -> Path:
    dest = FAILURES / case_id
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dump.exists():
        shutil.copytree(dump, dest)
    else:
        dest.mkdir()
    return dest


def verdict_of(doc: dict[str, Any]) -> tuple[str, str | None]:
    v = doc["verdict"]
    return v["hang_class"], (v["culprit"]["role"] if v["culprit"] else None)


def check_case(case_id: str, scenario: str, set_args: list[str], tmp_path: Path,
               expected: tuple[str, str | None] | None = None,
               absent: tuple[str, ...] = ()) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Run the demo, analyze, and compare with truth.json (and `expected`, which must agree
    with truth.json: a disagreement means the scenario is not what the case intends).
    Returns (dump, truth, analyzer document) for further checks of the dump."""
    dump = tmp_path / "dump"
    demo = run_demo(scenario, dump, set_args)
    if demo.returncode != 0 or not (dump / "truth.json").exists():
        kept = keep_failed_dump(case_id, dump)
        pytest.fail(f"SCENARIO: `postmortem demo {scenario}` exit {demo.returncode}, no dump "
                    f"(kept {kept}):\n{demo.stderr[-3000:]}")
    truth = json.loads((dump / "truth.json").read_text())
    problems: list[str] = []
    if expected is not None and (truth["hang_class"], truth["culprit_role"]) != expected:
        problems.append(f"SCENARIO: truth.json says {truth['hang_class']}/"
                        f"{truth['culprit_role']}, the case expects {expected[0]}/{expected[1]}")
    problems += [f"SCENARIO: {role} should be dead, truth.json all_roles has pid "
                 f"{truth['all_roles'][role]}"
                 for role in absent if truth["all_roles"].get(role) is not None]
    rc, doc, err = analyze(dump)
    if doc is None:
        problems.append(f"ANALYZER: `postmortem analyze --json` exit {rc}: {err[-3000:]}")
    else:
        got = verdict_of(doc)
        want = (truth["hang_class"], truth["culprit_role"])
        if got != want:
            problems.append(f"ANALYZER: expected {want[0]}/{want[1]}, got {got[0]}/{got[1]}")
        op = doc["verdict"]["blocking_op"]
        problems += [f"ANALYZER: blocking op {op!r} does not name {term!r}"
                     for term in truth.get("op_terms", []) if term not in op]
    if problems:
        kept = keep_failed_dump(case_id, dump)
        if doc is not None:
            (kept / "analyzer.json").write_text(json.dumps(doc, indent=1) + "\n")
            print(json.dumps(doc, indent=1))  # the full findings, shown by pytest on failure
        (kept / "demo-stderr.txt").write_text(demo.stderr)
        pytest.fail("\n".join(problems) + f"\ndump kept at {kept}")
    assert doc is not None
    return dump, truth, doc


def _marks(case: Case) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.live, pytest.mark.slow, pytest.mark.timeout(300),
             pytest.mark.skipif(not (HAVE_TF and HAVE_PYSPY), reason="needs tensorflow, py-spy")]
    if case.fuse:
        marks.append(pytest.mark.skipif(not HAVE_FUSE, reason="needs fusepy, fuse3, /dev/fuse"))
    if case.ci:
        marks.append(pytest.mark.ci)
    return marks


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_variation(case: Case, tmp_path: Path) -> None:
    # GIVEN the scenario run with non-default parameters, captured by the real CLI
    # WHEN the dump is analyzed THEN class and culprit are those the scenario injected
    _dump, truth, doc = check_case(case.id, case.scenario, case.set_args(), tmp_path,
                                   (case.expected_class, case.expected_culprit), case.absent)
    print(f"{case.id}: truth {truth['hang_class']}/{truth['culprit_role']}, "
          f"analyzer {verdict_of(doc)}, confidence {doc['verdict']['confidence']}")


def test_cases_are_valid_scenario_parameters() -> None:
    """Fast: every case names a real scenario and only its parameters (no TF needed)."""
    from postmortem.scenarios import SCENARIOS

    for case in CASES:
        defaults = SCENARIOS[case.scenario].defaults
        assert set(case.params) <= set(defaults), (case.id, set(case.params) - set(defaults))
        assert SCENARIOS[case.scenario].hang_class == case.expected_class
        assert case.command().startswith(f"postmortem demo {case.scenario} -o DUMP")
