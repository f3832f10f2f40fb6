"""postmortem.cache: the next command on the same dump reads the first one's analysis."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import postmortem
from postmortem import cache
from postmortem.cli import main
from postmortem.serialize import incident_document
from tests.conftest import SAMPLES

SAMPLE = SAMPLES / "ps-frozen-during-save"


@pytest.fixture
def where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache on, in a directory of the test's own, keeping every analysis."""
    monkeypatch.setenv("POSTMORTEM_CACHE", "on")
    monkeypatch.setenv("POSTMORTEM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "MIN_SECONDS", 0.0)
    return tmp_path / "cache"


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE, tmp_path / "dump")
    return tmp_path / "dump"


class Counted:
    """postmortem.analyze, counting its calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.real = postmortem.analyze
        monkeypatch.setattr(postmortem, "analyze", self)

    def __call__(self, loaded: Any) -> Any:
        self.calls += 1
        return self.real(loaded)


def kept(where: Path) -> list[Path]:
    return sorted(where.glob(f"*{cache.SUFFIX}")) if where.is_dir() else []


def test_the_second_command_reads_the_first_ones_analysis(
    where: Path, dump: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyses = Counted(monkeypatch)
    # WHEN a dump is analyzed and kept, THEN one private file holds it
    first, keep = cache.analysis(dump)
    keep()
    [file] = kept(where)
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    assert oct(where.stat().st_mode & 0o777) == "0o700"
    # AND the next analysis of the same dump reads it: the same incident, not analyzed again
    second, keep_again = cache.analysis(dump)
    keep_again()
    assert analyses.calls == 1
    assert incident_document(second) == incident_document(first)
    assert second.verdict.finding.hang_class == first.verdict.finding.hang_class


@pytest.mark.parametrize("change", ["append", "remove", "add", "same size"])
def test_a_changed_dump_is_analyzed_again(
    where: Path, dump: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    analyses = Counted(monkeypatch)
    cache.analysis(dump)[1]()
    log = next(dump.glob("processes/*/logs/stderr.txt"))
    if change == "append":
        with log.open("a") as handle:
            handle.write("one more line\n")
    elif change == "remove":
        log.unlink()
    elif change == "add":
        (dump / "processes" / "extra.txt").write_text("x")
    else:  # rewritten in place to the same size, its times set back as `cp -p` would
        data, before = log.read_bytes(), log.stat()
        log.write_bytes(data.upper())
        os.utime(log, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert log.stat().st_mtime_ns == before.st_mtime_ns and log.stat().st_size == len(data)
    cache.analysis(dump)[1]()
    assert analyses.calls == 2


def test_another_postmortem_analyzes_again(
    where: Path, dump: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyses = Counted(monkeypatch)
    cache.analysis(dump)[1]()
    monkeypatch.setattr(cache, "_CODE", "an edited checkout")
    cache.analysis(dump)[1]()
    assert analyses.calls == 2


def test_a_kept_analysis_names_the_dump_as_it_is_named_this_time(
    where: Path, dump: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyses = Counted(monkeypatch)
    first, keep = cache.analysis(dump)
    keep()
    link = tmp_path / "latest"
    link.symlink_to(dump)
    again, _ = cache.analysis(link)
    assert analyses.calls == 1
    assert first.dump.path == str(dump) and again.dump.path == str(link)


def test_a_dump_whose_path_is_not_utf8_is_analyzed_and_kept(
    where: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/dump-\xff"))
    shutil.copytree(SAMPLE, odd)
    analyses = Counted(monkeypatch)
    cache.analysis(odd)[1]()
    incident, _ = cache.analysis(odd)
    assert analyses.calls == 1 and incident.verdict.finding.hang_class.value == "peer-unresponsive"


def test_a_dump_that_changes_while_it_is_analyzed_is_not_kept(
    where: Path, dump: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = postmortem.analyze

    def capture_still_writing(loaded: Any) -> Any:
        (dump / "processes" / "late.json").write_text("{}")
        return real(loaded)

    monkeypatch.setattr(postmortem, "analyze", capture_still_writing)
    cache.analysis(dump)[1]()
    assert kept(where) == []


@pytest.mark.parametrize("how", ["world-writable file", "group-writable directory",
                                 "someone else's file", "a link", "garbage", "another key",
                                 "a directory that is a link"])
def test_a_cache_file_that_is_not_the_users_own_or_not_one_is_not_read(
    where: Path, dump: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    cache.analysis(dump)[1]()
    [file] = kept(where)
    if how == "world-writable file":
        file.chmod(0o666)
    elif how == "group-writable directory":
        where.chmod(0o770)
    elif how == "someone else's file":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a file away")
        os.chown(file, 65534, 65534)
    elif how == "a link":
        target = file.with_name("elsewhere")
        file.rename(target)
        file.symlink_to(target)
    elif how == "a directory that is a link":
        where.rename(where.with_name("real-cache"))
        where.symlink_to(where.with_name("real-cache"))
    elif how == "garbage":
        file.write_bytes(b"\x80\x05not a pickle at all")
    else:  # a valid pickle of something else under this name
        import pickle

        file.write_bytes(pickle.dumps((cache.FORMAT, "another key", None)))
        file.chmod(0o600)
    analyses = Counted(monkeypatch)
    incident, keep = cache.analysis(dump)
    keep()
    # THEN it analyzes the dump itself, and the verdict is the dump's
    assert analyses.calls == 1
    assert incident.verdict.finding.hang_class.value == "peer-unresponsive"
    if how == "a directory that is a link":  # nothing written through it either
        assert len(list(where.with_name("real-cache").iterdir())) == 1
    if how in ("garbage", "another key"):  # replaced by a good one
        assert analyses.calls == 1 and len(kept(where)) == 1
        assert cache.analysis(dump)[0].verdict.finding.hang_class.value == "peer-unresponsive"
        assert analyses.calls == 1


def test_off_keeps_nothing_and_a_cache_that_cannot_be_written_changes_nothing(
    where: Path, dump: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POSTMORTEM_CACHE", "off")
    assert main(["analyze", str(dump), "--json"]) == 0
    assert kept(where) == []
    # A cache directory that cannot be made (its parent is a file): the command still works.
    monkeypatch.setenv("POSTMORTEM_CACHE", "on")
    blocker = where.parent / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("POSTMORTEM_CACHE_DIR", str(blocker / "cache"))
    capsys.readouterr()
    assert main(["analyze", str(dump), "--json"]) == 0
    out = capsys.readouterr()
    assert '"hang_class":"peer-unresponsive"' in out.out and "Traceback" not in out.err


def test_the_commands_share_one_analysis_and_print_the_same(
    where: Path, dump: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    analyses = Counted(monkeypatch)
    assert main(["analyze", str(dump), "--json"]) == 0
    first = capsys.readouterr().out
    assert main(["report", str(dump), "-o", str(tmp_path / "r.html")]) == 0
    assert main(["export", str(dump), "-f", "speedscope", "-o", str(tmp_path / "s.json")]) == 0
    assert main(["analyze", str(dump), "--json"]) == 0
    outputs = capsys.readouterr().out
    assert analyses.calls == 1
    assert outputs.endswith(first)
    assert (tmp_path / "r.html").stat().st_size > 0


def test_only_the_newest_analyses_are_kept(
    where: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "MAX_ENTRIES", 2)
    dumps = []
    for index in range(3):
        copy = tmp_path / f"dump{index}"
        shutil.copytree(SAMPLE, copy)
        dumps.append(copy)
        cache.analysis(copy)[1]()
    assert len(kept(where)) == 2
    analyses = Counted(monkeypatch)
    cache.analysis(dumps[2])  # the newest is still there
    assert analyses.calls == 0
    cache.analysis(dumps[0])  # the oldest was removed
    assert analyses.calls == 1


def test_a_quick_analysis_is_not_kept(where: Path, dump: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MIN_SECONDS", 3600.0)
    cache.analysis(dump)[1]()
    assert kept(where) == []


def test_a_half_written_file_left_by_a_killed_command_is_removed(
    where: Path, dump: Path, tmp_path: Path
) -> None:
    where.mkdir(mode=0o700)
    left = where / ".abandoned.tmp"
    left.write_bytes(b"half a pickle")
    fresh = where / ".being-written.tmp"
    fresh.write_bytes(b"another command is writing this")
    old = left.stat().st_mtime - cache.STALE_TMP_S - 60
    os.utime(left, (old, old))
    other = tmp_path / "other"
    shutil.copytree(SAMPLE, other)
    cache.analysis(other)[1]()
    assert not left.exists() and fresh.exists() and len(kept(where)) == 1
