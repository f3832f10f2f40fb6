"""Loading dumps into DataFrames, and the clear errors for dumps that cannot be read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import postmortem
from postmortem.cli import main
from postmortem.dumpfiles import NotReadable
from postmortem.errors import ExitCode
from postmortem.loading import COLUMNS
from tests.conftest import SAMPLES

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ps-frozen-during-save"


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    copy = tmp_path / "dump"
    shutil.copytree(SAMPLE, copy)
    return copy


def test_python_api_gives_every_frame_with_its_columns() -> None:
    loaded = postmortem.load(SAMPLE)
    for name, columns in COLUMNS.items():
        frame = getattr(loaded, name)
        assert list(frame.columns[: len(columns)]) == list(columns), name
    assert len(loaded.processes) == 2
    assert set(loaded.process_rounds["round"]) == {0, 1, 2}
    assert (loaded.frames["function"] == "Saver.save").any()
    assert loaded.problems.empty


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def test_missing_dump_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["analyze", str(tmp_path / "nope")], capsys)
    assert code == ExitCode.BAD_DUMP
    assert "does not exist" in err and "Traceback" not in err


def test_directory_without_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["analyze", str(tmp_path)], capsys)
    assert code == ExitCode.BAD_DUMP
    assert "no manifest.json" in err


def test_corrupt_manifest(dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (dump / "manifest.json").write_text('{"format": "postmortem-dump", "schema_')
    code, err = _run(["analyze", str(dump)], capsys)
    assert code == ExitCode.BAD_DUMP
    assert "corrupt" in err and "Traceback" not in err


def test_unknown_schema_version_is_refused(dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((dump / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (dump / "manifest.json").write_text(json.dumps(manifest))
    code, err = _run(["analyze", str(dump)], capsys)
    assert code == ExitCode.UNSUPPORTED_DUMP_VERSION
    assert "schema_version 99" in err and "Upgrade" in err


def test_a_corrupt_file_inside_is_a_problem_not_a_crash(
    dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a dump whose ps round files were truncated (a disk filled up mid-capture)
    ps_pid = next(
        t["pid"]
        for t in json.loads((dump / "manifest.json").read_text())["targets"]
        if "--job_name=ps"
        in " ".join(json.loads((dump / t["dir"] / "process.json").read_text())["cmdline"])
    )
    round_file = dump / f"processes/{ps_pid}/round-001/procfs.json"
    round_file.write_text(round_file.read_text()[:100])
    (dump / f"processes/{ps_pid}/round-002/pyspy.json").write_text("[{")
    # WHEN loaded and analyzed
    loaded = postmortem.load(dump)
    code, _ = _run(["analyze", str(dump), "--json"], capsys)
    # THEN the problems are listed, and the verdict still stands on the rest
    problems = " ".join(loaded.problems["file"])
    assert "round-001/procfs.json" in problems and "round-002/pyspy.json" in problems
    assert code == 0


def test_interrupted_capture_is_still_analyzed(
    dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((dump / "manifest.json").read_text())
    manifest["complete"] = False
    manifest["rounds"] = manifest["rounds"][:1]
    (dump / "manifest.json").write_text(json.dumps(manifest))
    code = main(["analyze", str(dump)])
    out = capsys.readouterr().out
    assert code == 0
    assert "interrupted" in out


def _edit_json(path: Path, change: Any) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _first_ps_round(dump: Path, name: str) -> Path:
    for target in json.loads((dump / "manifest.json").read_text())["targets"]:
        info = json.loads((dump / target["dir"] / "process.json").read_text())
        if "--job_name=ps" in info["cmdline"]:
            return dump / target["dir"] / "round-000" / name
    raise AssertionError("no ps")


def _set_thread_field(key: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> dict[str, Any]:
        data["threads"][0][key] = value
        return data

    return change


# Malformed content of valid JSON, one file at a time (found by a review probing damaged dumps).
DAMAGE: dict[str, Any] = {
    "pyspy threads not objects": lambda d: _first_ps_round(d, "pyspy.json").write_text("[1, 2]"),
    "null utime": lambda d: _edit_json(
        _first_ps_round(d, "procfs.json"), lambda x: {**x, "utime": None}
    ),
    "thread without tid": lambda d: _edit_json(
        _first_ps_round(d, "procfs.json"), _set_thread_field("tid", None)
    ),
    "thread with null state": lambda d: _edit_json(
        _first_ps_round(d, "procfs.json"), _set_thread_field("state", None)
    ),
    "process.json a list": lambda d: (
        _first_ps_round(d, "procfs.json").parent.parent.joinpath("process.json").write_text("[1]")
    ),
    "checkpoint entry without index": lambda d: _edit_json(
        d / "manifest.json", lambda m: {**m, "checkpoint_dirs": [{"dir": "/x"}]}
    ),
    "target pid not a number": lambda d: _edit_json(
        d / "manifest.json", lambda m: {**m, "targets": [*m["targets"], {"pid": "abc"}]}
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_content_never_crashes_and_the_verdict_stands(
    dump: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    DAMAGE[damage](dump)
    code = main(["analyze", str(dump), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    verdict = json.loads(captured.out)["verdict"]
    assert verdict["hang_class"] == "peer-unresponsive"
    assert verdict["culprit"]["role"] == "ps:0"


def test_a_gzipped_dump_reads_as_the_plain_one(tmp_path: Path) -> None:
    # GIVEN a recorded sample, and the same dump with every file but the manifest gzipped,
    # as a capture of many processes writes it
    import gzip

    from collectors.dump import gzip_dump
    from postmortem.dumpfiles import DumpReader

    sample = SAMPLES / "ps-frozen-during-save"
    packed = tmp_path / "packed"
    shutil.copytree(sample, packed)
    assert gzip_dump(packed) > 10
    assert not list(packed.rglob("pyspy.json")) and list(packed.rglob("pyspy.json.gz"))
    # THEN the same verdict, every frame alike, and evidence citing the files it holds
    plain, gz = postmortem.load(sample), postmortem.load(packed)
    for name in ("threads", "frames", "process_rounds", "sockets", "log_lines"):
        pd.testing.assert_frame_equal(plain.frames_by_name[name], gz.frames_by_name[name])
    assert gz.problems.empty, gz.problems
    incident = postmortem.analyze(gz)
    assert incident.verdict.finding.hang_class.value == "peer-unresponsive"
    for evidence in incident.verdict.finding.evidence:
        assert (packed / evidence.source).is_file(), evidence.source
    # ... and a file that inflates past the limit is refused, not inflated
    (packed / "bomb.json.gz").write_bytes(gzip.compress(b"[" + b" " * 5_000_000 + b"]"))
    with pytest.raises(NotReadable, match="too large"):
        DumpReader(packed).read_bytes("bomb.json", limit=1_000_000)
    (packed / "junk.json.gz").write_bytes(b"not gzip at all")
    with pytest.raises(NotReadable, match="corrupt"):
        DumpReader(packed).read_bytes("junk.json")
