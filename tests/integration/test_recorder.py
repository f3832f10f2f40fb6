"""Live jobs that run the flight recorder (postmortem.recorder): real clusters on 127.0.0.1
whose processes record their own steps, traces and saves, then hang for real.

Each checks what only the recorder can tell (the save that began and never ended, the last
traced step with the ps's RecvTensor transfers, the variable inventory, the moment steps
stopped) in the dump the real CLI captured and in `postmortem analyze --json`; and that the
watchdog captures the cluster on its own when a save stalls.

Run: python -m pytest tests/integration/test_recorder.py -m slow -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from postmortem.scenarios import get_scenario
from tests.conftest import REPO
from tests.integration.test_variations import HAVE_PYSPY, HAVE_TF, check_case

pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.timeout(360),
              pytest.mark.skipif(not (HAVE_TF and HAVE_PYSPY),
                                 reason="needs tensorflow and py-spy")]


def flights(dump: Path) -> dict[int, dict[str, Any]]:
    return {int(p.parent.name): json.loads(p.read_text())
            for p in dump.glob("processes/*/flight.json")}


def record_of(doc: dict[str, Any], role: str) -> dict[str, Any]:
    return next(f for f in doc["flights"] if f["role"] == role)


@pytest.mark.parametrize("case", [
    pytest.param({"num_ps": 1}, id="1ps"),
    pytest.param({"num_ps": 2, "culprit": "ps:1", "vars": ["table:20000x16"]}, id="2ps-ps1"),
])
def test_a_frozen_ps_save_as_the_job_recorded_it(case: dict[str, Any], tmp_path: Path) -> None:
    params = {"recorder": True, **case}
    culprit = params.get("culprit", "ps:0")
    set_args = [a for k, v in params.items()
                for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    dump, truth, doc = check_case(f"recorded-ps-frozen-{len(case)}", "ps-frozen-during-save",
                                  set_args, tmp_path, ("peer-unresponsive", culprit))
    recorded = flights(dump)
    worker_pid = truth["all_roles"]["worker:0"]
    assert worker_pid in recorded  # the capture found the job's flight directory
    raw = recorded[worker_pid]
    assert raw["saving_since"] is not None and raw["steps"]
    variables = {v["name"]: v for v in raw["inventory"]["variables"]}
    assert variables["global_step"]["device"].startswith("/job:ps")
    assert raw["inventory"]["savers"][0]["sharded"] is False

    worker = record_of(doc, "worker:0")
    save = next(s for s in worker["saves"] if s["ended"] is None)
    assert save["seconds"] > 0 and save["global_step"] is not None
    trace = worker["traces"][-1]
    roles = {op["role"] for op in trace["ops"]}
    assert "worker:0" in roles and any(r.startswith("ps:") for r in roles)
    assert worker["transfers"] and worker["transfers"][0]["largest_bytes"] > 0
    assert worker["transfers"][0]["source_device"].startswith("/job:ps")
    evidence = " ".join(e["what"] for e in doc["findings"][0]["evidence"])
    assert "flight recorder of worker:0: a save" in evidence

    # chrome-trace carries the recorded step_stats beside the rest
    out = subprocess.run([sys.executable, "-m", "postmortem", "export", str(dump), "--format",
                          "chrome-trace", "-o", str(tmp_path / "t.json")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert any(e.get("cat") == "flight,step_stats" and e["pid"] == worker_pid for e in events)



@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_a_sync_replicas_stall_as_the_workers_recorded_it(fault: str, tmp_path: Path) -> None:
    set_args = ["--set", "recorder=true", "--set", f"fault={fault}"]
    dump, truth, doc = check_case(f"recorded-sync-{fault}", "sync-replicas-stall", set_args,
                                  tmp_path, ("training-stalled", "worker:1"))
    chief = record_of(doc, "worker:0")
    assert chief["sync_replicas"] is True and chief["replicas_to_aggregate"] == 2
    assert chief["steps"]
    # the chief's Supervisor kept saving (a recorded Saver) while steps did not advance
    assert any(s["ended"] is not None for s in chief["saves"])
    evidence = " ".join(e["what"] for e in doc["findings"][0]["evidence"])
    assert "replicas_to_aggregate=2" in evidence



def test_the_watchdog_captures_the_cluster_when_a_save_stalls(tmp_path: Path) -> None:
    # GIVEN a job whose recorder's watchdog fires after 4 s with auto_capture, and a ps that
    # freezes as a save begins WHEN nobody runs postmortem THEN the job's own watchdog starts
    # `postmortem capture --discover`, whose dump names the frozen ps
    scenario = get_scenario("ps-frozen-during-save")
    run = scenario.start(tmp_path / "run", recorder=True, recorder_stall_s=4.0,
                         recorder_auto_capture=True)
    children: list[int] = []
    try:
        with run:
            run.wait_established(timeout=150)
            flight_dir = run.workdir / "flight"
            deadline = time.monotonic() + 120
            manifest = None
            while time.monotonic() < deadline:
                for f in flight_dir.glob("*/flight.json"):
                    try:
                        events = json.loads(f.read_text())["events"]
                    except (OSError, ValueError):
                        continue
                    children += [int(e["pid"]) for e in events
                                 if e["kind"] == "capture-started" and e["pid"] not in children]
                dumps = sorted(flight_dir.glob("capture-*/manifest.json"))
                if dumps:
                    data = json.loads(dumps[0].read_text())
                    if data.get("complete") is True:  # rewritten each round until the end
                        manifest = dumps[0]
                        break
                time.sleep(1)
            assert manifest is not None, f"no auto capture under {flight_dir}: " + "".join(
                p.read_text()[-2000:] for p in flight_dir.glob("*/capture.log"))
            assert len(children) == 1  # one incident, one capture
            out = subprocess.run([sys.executable, "-m", "postmortem", "analyze",
                                  str(manifest.parent), "--json"],
                                 capture_output=True, text=True, timeout=120, cwd=REPO)
            assert out.returncode == 0, out.stderr
            doc = json.loads(out.stdout)
            assert doc["verdict"]["hang_class"] == "peer-unresponsive"
            assert doc["verdict"]["culprit"]["role"] == "ps:0"
            stalls = [s for f in doc["flights"] for s in f["stalls"]]
            assert stalls and stalls[0]["what"] == "save"
    finally:
        for pid in children:
            _kill_group(pid)


def _kill_group(pid: int) -> None:
    """The auto capture runs in its own session: end it and whatever it started."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

