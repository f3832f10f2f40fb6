"""Exports: speedscope (checked against the file format's schema, rewritten here because
it cannot be fetched offline), folded stacks, and Chrome/Perfetto trace events."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import postmortem
from postmortem.analysis.logs import parse_log_time
from postmortem.cli import main as cli_main
from postmortem.exports.folded import folded_lines
from postmortem.model import Incident
from postmortem.render import RenderOptions, renderer
from tests.conftest import HOSTILE, PS, W0, sample_dumps, write_cluster_dump


def incident_of(dump: Path) -> Incident:
    return postmortem.analyze(postmortem.load(dump))


def export_text(incident: Incident, fmt: str, stacks: str = "auto") -> str:
    return renderer(fmt).render(incident, RenderOptions(stacks=stacks))

# The required structure of https://www.speedscope.app/file-format-schema.json (FileFormat
# .File, SampledProfile, EventedProfile, Frame), as speedscope's import code checks it.
FRAME = {"type": "object", "required": ["name"],
         "properties": {"name": {"type": "string"}, "file": {"type": "string"},
                        "line": {"type": "number"}, "col": {"type": "number"}}}
UNIT = {"enum": ["none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"]}
SAMPLED = {"type": "object",
           "required": ["type", "name", "unit", "startValue", "endValue", "samples", "weights"],
           "properties": {"type": {"const": "sampled"}, "name": {"type": "string"}, "unit": UNIT,
                          "startValue": {"type": "number"}, "endValue": {"type": "number"},
                          "samples": {"type": "array", "items": {
                              "type": "array", "items": {"type": "integer", "minimum": 0}}},
                          "weights": {"type": "array", "items": {"type": "number"}}}}
EVENTED = {"type": "object",
           "required": ["type", "name", "unit", "startValue", "endValue", "events"],
           "properties": {"type": {"const": "evented"}}}
SPEEDSCOPE_SCHEMA = {
    "type": "object", "required": ["$schema", "shared", "profiles"],
    "properties": {
        "$schema": {"const": "https://www.speedscope.app/file-format-schema.json"},
        "shared": {"type": "object", "required": ["frames"],
                   "properties": {"frames": {"type": "array", "items": FRAME}}},
        "profiles": {"type": "array", "items": {"oneOf": [SAMPLED, EVENTED]}},
        "name": {"type": "string"}, "activeProfileIndex": {"type": "integer"},
        "exporter": {"type": "string"},
    },
}
FOLDED_LINE = re.compile(r"^[^;\n]+(;[^;\n]+)* (\d+)$")
PHASES = {"X", "B", "E", "i", "I", "M", "C", "b", "e", "n", "s", "t", "f"}


@pytest.fixture()
def cluster_dump(tmp_path: Path) -> Path:
    return write_cluster_dump(tmp_path / "dump")


def check_speedscope(document: dict[str, Any]) -> None:
    jsonschema.validate(document, SPEEDSCOPE_SCHEMA)
    frames = document["shared"]["frames"]
    for profile in document["profiles"]:
        assert len(profile["samples"]) == len(profile["weights"])
        assert profile["endValue"] - profile["startValue"] == sum(profile["weights"])
        for stack in profile["samples"]:
            assert all(0 <= i < len(frames) for i in stack)


def check_trace(document: dict[str, Any]) -> None:
    assert isinstance(document["traceEvents"], list)
    for event in document["traceEvents"]:
        for key in ("name", "ph", "ts", "pid", "tid"):
            assert key in event, (key, event)
        assert event["ph"] in PHASES
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
        if event["ph"] == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0
        if event["ph"] == "M":
            assert event["name"] in ("process_name", "thread_name", "process_sort_index",
                                     "thread_sort_index")
            assert "name" in event["args"]
        if event["ph"] == "i":
            assert event.get("s", "t") in ("g", "p", "t")


def test_speedscope_has_one_sampled_profile_per_process(cluster_dump: Path) -> None:
    document = json.loads(export_text(incident_of(cluster_dump), "speedscope"))
    check_speedscope(document)
    names = [p["name"] for p in document["profiles"]]
    assert names == ["ps:0 (pid 101)", "worker:0 (pid 102)"]
    frames = document["shared"]["frames"]
    worker = document["profiles"][1]
    assert len(worker["samples"]) == 6  # 2 threads x 3 rounds
    main = [[frames[i]["name"] for i in stack] for stack in worker["samples"]
            if frames[stack[0]]["name"].startswith("thread MainThread")][0]
    assert main[1] == "<module>" and main[-1] == "_call_tf_sessionrun"  # root first
    save = next(f for f in frames if f["name"] == "Saver.save")
    assert save["file"].endswith("saver.py") and save["line"] == 1300


def test_schema_rejects_what_speedscope_would() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"$schema": "x", "shared": {"frames": []}, "profiles": []},
                            SPEEDSCOPE_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"$schema": SPEEDSCOPE_SCHEMA["properties"]["$schema"]["const"],
                             "shared": {"frames": [{}]}, "profiles": []}, SPEEDSCOPE_SCHEMA)


def test_folded_lines_are_root_first_and_count_rounds(tmp_path: Path) -> None:
    incident = incident_of(write_cluster_dump(tmp_path / "d", thread_name="a;b c\nd"))
    text = export_text(incident, "folded")
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 3
    for line in lines:
        assert FOLDED_LINE.match(line), line
    counts = sum(int(line.rsplit(" ", 1)[1]) for line in lines)
    assert counts == len(incident.stack_samples) == 9
    worker_main = next(line for line in lines if line.startswith("worker:0 (pid 102);MainThread"))
    assert worker_main.split(";")[2] == "<module> (train.py:99)"
    assert worker_main.endswith("_call_tf_sessionrun (session.py:1477) 3")
    assert any(";a:b c:d (tid 602);" in line for line in lines)


def test_folded_of_no_stacks_is_empty() -> None:
    assert folded_lines([], {}) == []


def test_chrome_trace_has_tf_ops_rounds_and_timed_log_events(cluster_dump: Path) -> None:
    document = json.loads(export_text(incident_of(cluster_dump), "chrome-trace"))
    check_trace(document)
    events = document["traceEvents"]
    tf = [e for e in events if e.get("cat", "").startswith("tf,")]
    assert len(tf) == 3
    save = next(e for e in tf if e["name"] == "save/SaveV2:SaveV2")
    assert save["pid"] == W0  # the worker listens on the traced address
    assert save["dur"] == 800_000.0 and save["args"]["op"] == "SaveV2"
    assert save["cat"] == "tf,checkpoint op"
    assert save["ts"] == pytest.approx((1_700_000_000 + 0.5) * 1e6 + 1_000)  # same clock
    rounds = [e for e in events if e.get("cat") == "capture"]
    assert len(rounds) == 3 and rounds[0]["ts"] == pytest.approx(1_700_000_000e6)
    logs = [e for e in events if e.get("cat", "").startswith("log") and e["ph"] == "i"]
    assert [e["cat"] for e in logs] == ["log,step", "log,step", "log,save", "log,error"]
    steps = [e for e in events if e["ph"] == "C"]  # the step counter, one point per step line
    assert [e["args"]["step"] for e in steps] == [100, 200]  # the untimed one is not drawn
    assert document["otherData"]["log_events_without_timestamp"] == 1
    names = {(e["pid"], e["args"]["name"]) for e in events if e["ph"] == "M"}
    assert (W0, "worker:0 (pid 102)") in names


def test_log_times_in_the_formats_tensorflow_jobs_print() -> None:
    python_logging = parse_log_time("2023-11-14 22:13:20,500 102 MainThread INFO x", 2023)
    tf_cpp = parse_log_time("2023-11-14 22:13:20.500000: I tensorflow/core/x.cc:1] y", 2023)
    absl = parse_log_time("I1114 22:13:20.500000 1401 saver.py:1] Saving", 2023)
    assert python_logging == tf_cpp == absl is not None
    assert parse_log_time("no time here", 2023) is None
    assert parse_log_time("2023-13-45 99:99:99 bad", 2023) is None


def test_hostile_names_stay_data_in_every_format(tmp_path: Path) -> None:
    dump = incident_of(write_cluster_dump(tmp_path / "h", thread_name=HOSTILE,
                                          error_line=HOSTILE))
    for fmt in ("speedscope", "chrome-trace"):
        document = json.loads(export_text(dump, fmt))
        assert HOSTILE in json.dumps(document, ensure_ascii=False) or HOSTILE in str(document)
    check_speedscope(json.loads(export_text(dump, "speedscope")))
    for line in export_text(dump, "folded").splitlines():
        assert FOLDED_LINE.match(line)


def test_export_command_default_names_and_no_overwrite(cluster_dump: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    expected = {"speedscope": "dump.speedscope.json", "folded": "dump.folded",
                "chrome-trace": "dump.trace.json"}
    for fmt, name in expected.items():
        assert cli_main(["export", str(cluster_dump), "--format", fmt]) == 0
        assert (cluster_dump.parent / name).is_file()
        assert cli_main(["export", str(cluster_dump), "--format", fmt]) == 7
        assert cli_main(["export", str(cluster_dump), "--format", fmt, "--force"]) == 0
    capsys.readouterr()
    assert cli_main(["export", str(cluster_dump), "--format", "folded", "-o", "-"]) == 0
    assert "worker:0 (pid 102);MainThread" in capsys.readouterr().out
    assert cli_main(["export", str(cluster_dump), "--format", "svg"]) == 2
    assert cli_main(["export", str(cluster_dump), "--format", "folded", "--stacks", "bogus",
                     "-o", "-"]) == 2
    assert cli_main(["export", str(cluster_dump), "--format", "folded", "--stacks", "gdb",
                     "-o", "-"]) == 2  # the dump holds no gdb stacks: say so, no empty file
    assert "no gdb stacks" in capsys.readouterr().err


@pytest.mark.parametrize("sample", sample_dumps(), ids=lambda p: p.name)
def test_samples_export_to_valid_files(sample: Path) -> None:
    dump = incident_of(sample)
    check_speedscope(json.loads(export_text(dump, "speedscope")))
    check_trace(json.loads(export_text(dump, "chrome-trace")))
    for line in export_text(dump, "folded").splitlines():
        assert FOLDED_LINE.match(line), line


def test_pid_of_profile_frames_are_the_ps_and_worker(cluster_dump: Path) -> None:
    assert {s.pid for s in incident_of(cluster_dump).stack_samples} == {PS, W0}


def test_export_of_a_dump_read_from_inside_it_writes_beside_it(
    cluster_dump: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the user stands inside the dump and exports `.`
    monkeypatch.chdir(cluster_dump)
    assert cli_main(["export", ".", "--format", "folded"]) == 0
    # THEN the output lands beside the dump, never inside the evidence
    assert (cluster_dump.parent / "dump.folded").is_file()
    assert not list(cluster_dump.glob("*.folded"))
    assert cli_main(["export", ".", "--format", "folded", "-o", "x.folded"]) == 2
