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


def as_schema_5(sample: Path, out: Path) -> Path:
    """A recorded dump rewritten as a capture now writes it: threads, files and sockets as
    columns, the host's listening addresses in one file per round, source lines shared."""
    from collectors.procfs import columns

    shutil.copytree(sample, out)
    listed: set[str] = set()
    for procfs in sorted(out.glob("processes/*/round-*/procfs.json")):
        data = json.loads(procfs.read_text())
        data["netns"] = "4026531840"
        if procfs.parent.name in listed:
            data.pop("host_listening", None)
        listed.add(procfs.parent.name)
        for name in ("threads", "files", "sockets"):
            data[name] = columns(data.get(name) or [])
        procfs.write_text(json.dumps(data))
    shared: dict[str, dict[str, str]] = {}
    for own_file in sorted(out.glob("processes/*/sources.json")):
        own: dict[str, dict[str, str]] = {}
        for filename, lines in json.loads(own_file.read_text()).items():
            for number, text in lines.items():
                if shared.setdefault(filename, {}).setdefault(number, text) != text:
                    own.setdefault(filename, {})[number] = text
        if own:
            own_file.write_text(json.dumps(own))
        else:
            own_file.unlink()
    (out / "sources.json").write_text(json.dumps(shared))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["schema_version"] = 5
    for outcome in manifest["outcomes"]:  # the files each collector wrote, as now
        outcome["files"] = [f if (out / f).exists() else "sources.json"
                            for f in outcome.get("files") or []]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("name", ["ps-frozen-during-save", "saver-lock-deadlock",
                                  "mwms-partial-save"])
def test_the_columnar_layout_loads_as_the_rows_did(tmp_path: Path, name: str) -> None:
    # GIVEN a recorded sample and the same capture in schema 5's layout
    sample = SAMPLES / name
    if not sample.is_dir():
        pytest.skip(f"no sample {name}")
    old, new = postmortem.load(sample), postmortem.load(as_schema_5(sample, tmp_path / "v5"))
    # THEN every frame is the same, but where the listening addresses were written
    for frame in old.frames_by_name:
        a, b = old.frames_by_name[frame], new.frames_by_name[frame]
        if frame == "process_rounds":
            listening = [set(v) for v in b["host_listening"] if v is not None]
            assert len(listening) == b["round"].nunique()
            assert set().union(*listening) == set().union(*map(set, a["host_listening"]))
            a, b = a.drop(columns="host_listening"), b.drop(columns="host_listening")
        pd.testing.assert_frame_equal(a, b, obj=frame)
    for pid in old.sources:
        for filename, lines in old.sources[pid].items():
            for number in lines:
                assert new.source_line(pid, filename, int(number)) == lines[number]
    # AND the same verdict, its evidence citing files the dump holds
    before, after = postmortem.analyze(old), postmortem.analyze(new)
    assert after.verdict.finding.hang_class == before.verdict.finding.hang_class
    assert after.verdict.culprit == before.verdict.culprit
    for evidence in after.verdict.finding.evidence:
        assert (tmp_path / "v5" / evidence.source).is_file(), evidence.source


def test_hostile_columns_are_read_as_rows_or_refused(tmp_path: Path) -> None:
    # GIVEN a schema-5 dump whose columns lie: a tid that is text, a column shorter than
    # the others, a socket port column of objects, threads that are a string
    dump = as_schema_5(SAMPLE, tmp_path / "v5")
    rounds = sorted(dump.glob("processes/*/round-*/procfs.json"))
    edits = [
        lambda d: d["threads"]["tid"].__setitem__(0, "1; rm -rf /"),
        lambda d: d["threads"]["name"].pop(),
        lambda d: d["sockets"].__setitem__("tx_queue", [{"a": 1}] * len(d["sockets"]["fd"])),
        lambda d: d.update(threads="not columns", sockets=5),
        # times as text; and ragged, with thousands of unknown empty columns: read as rows
        # of the known ones
        lambda d: d["threads"].update({"utime": ["7"] * len(d["threads"]["tid"]),
                                       **{f"k{i}": [] for i in range(20_000)}}),
    ]
    for path, edit in zip(rounds, edits, strict=False):
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    # WHEN it is loaded and analyzed, THEN nothing crashes: each odd row or cell is dropped
    # or read as missing, the rest of the dump as it is
    loaded, clean = postmortem.load(dump), postmortem.load(SAMPLE)
    threads = loaded.threads
    assert threads["tid"].map(type).eq(int).all()
    assert threads["name"].map(type).eq(str).all()
    assert loaded.sockets["tx_queue"].isna().any()
    assert postmortem.analyze(loaded).verdict.finding.hang_class.value
    assert any("not a list or columns" in p for p in loaded.problems["problem"])
    # AND the rounds left alone load as they were
    untouched = [(int(p.parts[-3]), int(p.parts[-2][6:])) for p in rounds[len(edits):]]
    assert untouched
    for pid, rnd in untouched:
        for frame in ("threads", "sockets"):
            ours, orig = getattr(loaded, frame), getattr(clean, frame)
            mine = ours[(ours["pid"] == pid) & (ours["round"] == rnd)]
            theirs = orig[(orig["pid"] == pid) & (orig["round"] == rnd)]
            pd.testing.assert_frame_equal(mine.reset_index(drop=True),
                                          theirs.reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("which", ["last", "middle"])
@pytest.mark.parametrize("name", ["ps-frozen-during-save", "healthy-training"])
def test_a_connection_alike_in_every_round_is_one_row(
    tmp_path: Path, name: str, which: str
) -> None:
    # GIVEN a recorded dump, one socket of which changes its queue in the last round (or
    # in a middle one, the rounds around it alike)
    dump = tmp_path / "dump"
    shutil.copytree(SAMPLES / name, dump)
    files = sorted(dump.glob("processes/*/round-*/procfs.json"))
    by_round = sorted(files, key=lambda p: (p.parts[-2], p.parts[-3]))
    last = by_round[-1] if which == "last" else by_round[len(by_round) // 2]
    data = json.loads(last.read_text())
    established = [s for s in data["sockets"] if s.get("tcp_state") == "ESTABLISHED"]
    assert established
    established[0]["rx_queue"] = 4242
    last.write_text(json.dumps(data))
    # WHEN it is loaded
    sockets = postmortem.load(dump).sockets
    # THEN a row stands for every round from `round` to `last_round`, and those rows,
    # spread over their rounds, are exactly the sockets each round's file holds
    fields = list(COLUMNS["sockets"][2:-1])
    spread = sorted(
        (int(row["pid"]), rnd, *(row[f] for f in fields))
        for row in sockets.to_dict("records")
        for rnd in range(int(row["round"]), int(row["last_round"]) + 1)
    )
    written = sorted(
        (int(p.parts[-3]), int(p.parts[-2][6:]), *(s.get(f) for f in fields))
        for p in files
        for s in json.loads(p.read_text())["sockets"]
    )
    assert spread == written
    # AND connections that did not change are not repeated: fewer rows than sockets read
    assert len(sockets) < len(written)
    changed = sockets[sockets["rx_queue"] == 4242]
    assert len(changed) == 1 and int(changed["round"].iloc[0]) == int(last.parts[-2][6:])


def _synthetic(tmp_path: Path, processes: int, rounds: int, seed: int) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from synthetic import make_dump

    dump = tmp_path / f"synthetic-{processes}-{seed}"
    make_dump(dump, processes, rounds, seed, compress=False)
    return dump


def _spread_and_written(dump: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    fields = list(COLUMNS["sockets"][2:-1])
    sockets = postmortem.load(dump).sockets
    spread = sorted(
        (int(row["pid"]), rnd, *(None if pd.isna(row[f]) else row[f] for f in fields))
        for row in sockets.to_dict("records")
        for rnd in range(int(row["round"]), int(row["last_round"]) + 1)
    )
    written = []
    for path in dump.glob("processes/*/round-*/procfs.json"):
        block = json.loads(path.read_text())["sockets"]
        pid, rnd = int(path.parts[-3]), int(path.parts[-2][6:])
        for i in range(len(block["fd"])):
            cells = [block[f][i] for f in fields]
            # what the typed read makes of a cell: an int column's bool is no int
            cells = [None if isinstance(c, bool) else c for c in cells]
            written.append((pid, rnd, *cells))
    return spread, sorted(written)


@pytest.mark.parametrize(("processes", "rounds", "seed"), [(14, 3, 1), (23, 4, 5)])
def test_socket_columns_alike_as_read_extend_their_rows(
    tmp_path: Path, processes: int, rounds: int, seed: int
) -> None:
    # GIVEN a dump in the capture's layout (schema 5: sockets as columns), whose rounds
    # repeat each process's sockets block unchanged
    dump = _synthetic(tmp_path, processes, rounds, seed)
    # WHEN it is loaded, THEN the rows spread over their rounds are each round's sockets,
    # and far fewer rows were made than sockets read
    spread, written = _spread_and_written(dump)
    assert spread == written
    assert len(postmortem.load(dump).sockets) * (rounds - 1) < len(written)


def test_a_bool_that_equals_an_int_is_not_taken_for_it(tmp_path: Path) -> None:
    # GIVEN a schema 5 dump where one round's block equals the previous one's in Python's
    # eyes, but holds `true` where the previous round held 1 (True == 1)
    dump = _synthetic(tmp_path, 14, 3, 2)
    paths = sorted(dump.glob("processes/*/round-001/procfs.json"))
    edited = 0
    for path in paths:
        data = json.loads(path.read_text())
        queues = data["sockets"]["tx_queue"]
        if 1 in queues or 0 in queues:
            at = queues.index(1) if 1 in queues else queues.index(0)
            queues[at] = bool(queues[at])
            path.write_text(json.dumps(data))
            edited += 1
    assert edited
    # WHEN it is loaded, THEN that round reads the bool as no int (a row of its own), and
    # every round's sockets are still exactly what its file says
    spread, written = _spread_and_written(dump)
    assert spread == written


@pytest.mark.parametrize(
    "values",
    [
        [1, 2, 3],
        [1, None],
        [2**63, None],
        [-1, 2**63, None],
        [2**64, None],
        [-(2**63) - 1, None],
        [2**63, 1],
        [None, None],
        [1.5, None],
        [1.5, 2.5],
        [True, 1],
        ["a", None],
    ],
)
def test_a_column_reads_as_pandas_would_read_the_list(values: list[Any]) -> None:
    from postmortem.loading import _array

    # GIVEN a column's values as loaded; WHEN made into a frame's column, THEN the same
    # dtype and values as pandas would make of the list itself
    ours, theirs = pd.Series(_array(list(values))), pd.Series(list(values))
    assert ours.dtype == theirs.dtype
    assert ours.equals(theirs)
