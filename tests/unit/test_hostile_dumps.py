"""A dump is untrusted input: damaged, truncated or built to harm, it must still end in a
verdict that lists what it could not read, or in a clear bad-dump error; never an internal
error, never a hang, never a read outside the dump.

Property-based: hypothesis mutates copies of the committed samples (truncates, deletes,
fills with garbage, swaps in FIFOs, devices, directories and links out, changes JSON types,
nests JSON 200,000 deep, plants hostile paths and strings in the manifest), then runs
`postmortem analyze --json`, `report` and `export` in-process under an audit hook that
fails on any file opened outside the dump and Python's own installation.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import postmortem
from postmortem.cli import main
from tests.conftest import REPO, sample_dumps

SAMPLES = [p for p in sample_dumps() if p.name in ("ps-frozen-during-save", "sync-replicas-stall",
                                                     "storage-stall", "healthy-slow-save")]
HOSTILE_STRING = '<script>alert(1)</script>\x00\x1b[31m' + "x" * 5000
BOUND_S = 60.0  # no single command may take longer on a sample-sized dump


# -- what the audit hook allows ----------------------------------------------------------------
class Opens:
    """Files opened while armed; a path outside the allowed roots fails the test."""

    def __init__(self) -> None:
        self.armed_for: Path | None = None
        self.writes_to: Path | None = None
        self.outside: list[str] = []
        python = (sys.prefix, sys.base_prefix, REPO / "postmortem", REPO / "collectors")
        zones = ("/usr/share/zoneinfo", "/etc/localtime")  # local time for the report
        self.roots = [os.path.realpath(p) for p in (*python, *zones)]
        sys.addaudithook(self.hook)  # for the whole session: it is inert while disarmed

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or self.armed_for is None or threading.current_thread().name.startswith(
            "hypothesis"
        ):
            return
        path = args[0]
        if isinstance(path, int) or path is None:
            return
        real = os.path.realpath(os.fsdecode(path))
        allowed = [os.path.realpath(self.armed_for), *self.roots]
        if self.writes_to is not None:
            allowed.append(os.path.realpath(self.writes_to))
        if not any(real == root or real.startswith(root + os.sep) for root in allowed):
            self.outside.append(real)

    @contextlib.contextmanager
    def armed(self, dump: Path, writes_to: Path | None = None) -> Iterator[None]:
        """Any file opened outside `dump` (and the outputs' directory) is recorded."""
        self.armed_for, self.writes_to, self.outside = dump, writes_to, []
        try:
            yield
        finally:
            self.armed_for = self.writes_to = None


OPENS = Opens()


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


# -- mutations -------------------------------------------------------------------------------
def _files(dump: Path) -> list[str]:
    return sorted(str(p.relative_to(dump)) for p in dump.rglob("*") if p.is_file())


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def garbage(path: Path, fraction: float) -> None:
    path.write_bytes(os.urandom(64 + int(fraction * 4096)))


def replace_with_fifo(path: Path, _: float) -> None:
    path.unlink()
    os.mkfifo(path)


def link_out(path: Path, fraction: float) -> None:
    path.unlink()
    path.symlink_to("/dev/zero" if fraction < 0.5 else "/etc/passwd")


def replace_with_dir(path: Path, _: float) -> None:
    path.unlink()
    path.mkdir()


def nest_deep(path: Path, _: float) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


def delete(path: Path, _: float) -> None:
    path.unlink()


def retype(path: Path, fraction: float) -> None:
    """Change one value of a JSON file to another type."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return
    values: list[Any] = [None, 0, -1, 1e308, "", HOSTILE_STRING, [], {}, [1, "a"], True]
    replacement = values[int(fraction * len(values)) % len(values)]

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, dict) and node:
            key = sorted(node)[int(fraction * 997) % len(node)]
            node[key] = walk(node[key], depth + 1) if depth < 3 else replacement
            return node
        if isinstance(node, list) and node:
            index = int(fraction * 991) % len(node)
            node[index] = walk(node[index], depth + 1) if depth < 3 else replacement
            return node
        return replacement

    path.write_text(json.dumps(walk(data, 0)))


FILE_DAMAGE: dict[str, Callable[[Path, float], None]] = {
    "truncate": truncate, "garbage": garbage, "fifo": replace_with_fifo, "link-out": link_out,
    "dir": replace_with_dir, "deep": nest_deep, "delete": delete, "retype": retype,
}


def hostile_manifest(dump: Path, fraction: float) -> None:
    manifest = json.loads((dump / "manifest.json").read_text())
    choice = int(fraction * 8)
    if choice == 0:
        manifest["logs"] = [{"path": "/etc/passwd", "file": "/etc/passwd"}]
    elif choice == 1:
        manifest["logs"] = [{"path": "x", "file": "../../../../../../etc/passwd"}]
    elif choice == 2:
        for target in manifest["targets"]:
            target["dir"] = "/etc"
    elif choice == 3:
        manifest["checkpoint_dirs"] = [{"index": "../../../etc", "dir": "/etc"}]
    elif choice == 4:
        manifest["tf_servers"] = [{"index": "../../..", "address": HOSTILE_STRING}]
    elif choice == 5:
        manifest["targets"] = [{"pid": HOSTILE_STRING}, {"pid": -1}, {"pid": 2**70}]
    elif choice == 6:
        manifest["rounds"] = [{"index": "0", "started_at": "yesterday", "ended_at": None}]
    else:
        manifest["host"] = HOSTILE_STRING
        manifest["command"] = [HOSTILE_STRING]
    (dump / "manifest.json").write_text(json.dumps(manifest))


def loop_process_dir(dump: Path, fraction: float) -> None:
    pids = sorted((dump / "processes").iterdir())
    target = pids[int(fraction * len(pids)) % len(pids)]
    shutil.rmtree(target)
    target.symlink_to(target.name)  # a link to itself


@st.composite
def damage(draw: Any) -> tuple[Path, str, str, float]:
    sample = draw(st.sampled_from(SAMPLES))
    kind = draw(st.sampled_from([*FILE_DAMAGE, "hostile-manifest", "loop"]))
    files = [f for f in _files(sample) if f != "truth.json"]
    target = draw(st.sampled_from(files))
    return sample, kind, target, draw(st.floats(0, 0.999))


def apply(copy: Path, kind: str, target: str, fraction: float) -> None:
    if kind == "hostile-manifest":
        hostile_manifest(copy, fraction)
    elif kind == "loop":
        loop_process_dir(copy, fraction)
    else:
        FILE_DAMAGE[kind](copy / target, fraction)


def bounded(fn: Callable[[], Any]) -> Any:
    """Run fn in a thread; fail if it does not return within BOUND_S (a hang)."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(value=fn()), daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"did not return within {BOUND_S:.0f}s"
    return box["value"]


@pytest.mark.skipif(not SAMPLES, reason="needs the committed samples")
@settings(max_examples=int(os.environ.get("POSTMORTEM_HOSTILE_EXAMPLES", "120")),
          deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=os.environ.get("POSTMORTEM_HOSTILE_RANDOM") is None)
@given(damage())
def test_a_damaged_dump_ends_in_a_verdict_or_a_bad_dump_error(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[Path, str, str, float]
) -> None:
    sample, kind, target, fraction = case
    copy = tmp_path_factory.mktemp("dump") / sample.name
    shutil.copytree(sample, copy, symlinks=True)
    (copy / "truth.json").unlink()
    clean = postmortem.load(sample)
    readable = clean.read_files
    recorded = {f for files in clean.manifest["outcomes"] if files.get("status") == "ok"
                for f in files.get("files", [])}
    apply(copy, kind, target, fraction)
    out_dir = copy.parent / "out"
    out_dir.mkdir()
    with OPENS.armed(copy, writes_to=out_dir):
        code, out, err = bounded(lambda: run(["analyze", str(copy), "--json"]))
        report = bounded(lambda: run(["report", str(copy), "-o", str(out_dir / "r.html")]))
        trace = bounded(lambda: run(["export", str(copy), "-f", "chrome-trace", "-o",
                                     str(out_dir / "t.json")]))
    assert OPENS.outside == [], f"{kind} {target}: opened outside the dump: {OPENS.outside}"
    for got, what in ((code, "analyze"), (report[0], "report"), (trace[0], "export")):
        assert got in (0, 10, 11), f"{what} exit {got} after {kind} of {target}: {err[-2000:]}"
        assert "Traceback" not in err
    if code != 0:
        assert "postmortem: error:" in err
        return
    document = json.loads(out)
    assert document["verdict"]["hang_class"]
    if _should_be_listed(kind, target, fraction, readable, recorded, sample):
        problems = [p["file"] for p in document["load_problems"]]
        assert any(target.startswith(p) or p.startswith(target) or target in p
                   for p in problems), (kind, target, problems)


def _should_be_listed(
    kind: str, target: str, fraction: float, readable: frozenset[str], recorded: set[str],
    sample: Path,
) -> bool:
    """Whether the damage must show in load_problems: the file mattered and is now unusable."""
    if kind in ("fifo", "link-out", "dir", "delete"):
        return target in readable or target in recorded
    if target not in readable or not target.endswith(".json"):
        return False  # text stays readable text whatever its bytes
    if kind in ("garbage", "deep"):
        return True
    if kind == "truncate":
        size = (sample / target).stat().st_size
        return 0 < int(size * fraction) < size - 1
    return False


def test_a_manifest_that_is_a_fifo_is_a_bad_dump_at_once(tmp_path: Path) -> None:
    dump = tmp_path / "d"
    dump.mkdir()
    os.mkfifo(dump / "manifest.json")
    code, _, err = bounded(lambda: run(["analyze", str(dump)]))
    assert code == 10 and "not a regular file" in err


@pytest.mark.parametrize("version", [0, "1", None, 99, True])
def test_a_schema_version_that_is_not_ours_says_so(tmp_path: Path, version: Any) -> None:
    dump = tmp_path / "d"
    dump.mkdir()
    manifest = {"format": "postmortem-dump", "targets": [], "rounds": [], "outcomes": []}
    if version is not None:
        manifest["schema_version"] = version
    (dump / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run(["analyze", str(dump)])
    if version == 99:
        assert code == 11 and "newer postmortem" in err and "Upgrade" in err
    else:
        assert code == 10 and "Upgrade" not in err and "schema_version" in err


def test_a_dump_whose_every_process_is_unreadable_is_a_bad_dump(tmp_path: Path) -> None:
    copy = tmp_path / "d"
    shutil.copytree(SAMPLES[0], copy)
    for process in (copy / "processes").iterdir():
        shutil.rmtree(process)
    code, _, err = run(["analyze", str(copy)])
    assert code == 10 and "no process could be loaded" in err


def test_the_text_verdict_says_what_it_could_not_read(tmp_path: Path) -> None:
    copy = tmp_path / "d"
    shutil.copytree(SAMPLES[0], copy)
    victim = sorted(copy.glob("processes/*/round-001/procfs.json"))[0]
    victim.write_bytes(b"\x00\xff garbage")
    code, out, _ = run(["analyze", str(copy)])
    assert code == 0
    assert "could not be used" in out and str(victim.relative_to(copy)) in out


def test_a_directory_that_is_a_link_out_of_the_dump_is_never_read(tmp_path: Path) -> None:
    # GIVEN a round directory replaced by a link to a directory outside the dump that holds
    # a file of the very name the loader reads (directories are resolved once and cached)
    from postmortem.dumpfiles import DumpReader, NotReadable

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "pyspy.json").write_text("[]")
    dump = tmp_path / "dump"
    (dump / "processes" / "1").mkdir(parents=True)
    (dump / "processes" / "1" / "round-000").symlink_to(outside)
    (dump / "processes" / "1" / "round-001").mkdir()
    (dump / "processes" / "1" / "round-001" / "pyspy.json").symlink_to(outside / "pyspy.json")
    reader = DumpReader(dump)
    for relative in ("processes/1/round-000/pyspy.json", "processes/1/round-001/pyspy.json",
                     "processes/1/round-000/pyspy.json"):  # twice: the cache says the same
        with pytest.raises(NotReadable, match="outside the dump"):
            reader.read_bytes(relative)
    assert reader.read == set()


def test_json_the_fast_parser_refuses_is_read_as_the_standard_library_reads_it(
    tmp_path: Path,
) -> None:
    from postmortem.dumpfiles import DumpReader

    (tmp_path / "nan.json").write_text('{"rss": NaN, "x": [Infinity]}')
    got = DumpReader(tmp_path).read_json("nan.json")
    assert got["rss"] != got["rss"] and got["x"] == [float("inf")]


def test_links_are_followed_only_while_they_stay_inside_the_dump(tmp_path: Path) -> None:
    # GIVEN a dump whose `processes` directory links out of it, and whose `logs` directory
    # links to another directory of the same dump (directories are resolved step by step
    # from their parents, each name's link flag taken from one listing of its parent)
    from postmortem.dumpfiles import DumpReader, NotReadable

    outside = tmp_path / "outside"
    (outside / "1" / "round-000").mkdir(parents=True)
    (outside / "1" / "round-000" / "procfs.json").write_text("{}")
    dump = tmp_path / "dump"
    (dump / "real" / "deep").mkdir(parents=True)
    (dump / "real" / "deep" / "x.json").write_text('{"ok": 1}')
    (dump / "processes").symlink_to(outside)
    (dump / "logs").symlink_to(dump / "real")
    reader = DumpReader(dump)
    # THEN nothing below the link out is read, however deep, and the inner link reads
    for _ in range(2):
        with pytest.raises(NotReadable, match="outside the dump"):
            reader.read_bytes("processes/1/round-000/procfs.json")
        assert reader.read_json("logs/deep/x.json") == {"ok": 1}
        with pytest.raises(NotReadable, match="missing"):
            reader.read_bytes("logs/deep/absent.json")
    assert reader.read == {"logs/deep/x.json"}


def test_a_directory_swapped_for_a_link_after_it_was_listed_is_not_followed(
    tmp_path: Path,
) -> None:
    # GIVEN a reader that has listed a process's directory, which someone then replaces by
    # a link out of the dump to a directory that holds a file of the very name it reads
    from postmortem.dumpfiles import DumpReader, NotReadable

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stderr.txt").write_text("a secret\n")
    dump = tmp_path / "dump"
    (dump / "processes" / "7" / "logs").mkdir(parents=True)
    (dump / "processes" / "7" / "logs" / "stderr.txt").write_text("the job's log\n")
    reader = DumpReader(dump)
    assert reader.read_bytes("processes/7/logs/stderr.txt") == b"the job's log\n"
    (dump / "processes" / "7" / "logs").rename(tmp_path / "moved")
    (dump / "processes" / "7" / "logs").symlink_to(outside)
    # THEN the file behind the link is refused, though its directory was listed as no link
    with pytest.raises(NotReadable, match="outside the dump"):
        reader.read_bytes("processes/7/logs/stderr.txt")
