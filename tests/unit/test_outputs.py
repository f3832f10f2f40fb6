"""Where outputs go: every path that cannot be written gets exit 13 and the OS's reason;
nothing is replaced without --force; nothing is written inside the dump; '-' is stdout."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from postmortem.cli import main
from tests.conftest import SAMPLES

SAMPLE = SAMPLES / "ps-frozen-during-save"


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs mount (root only); skipped where mounting is not allowed."""
    target = tmp_path / "ro"
    target.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)],
                          capture_output=True, timeout=20)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.decode()[:200]}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=20)


COMMANDS = {
    "report": lambda out: ["report", str(SAMPLE), "-o", out],
    "export": lambda out: ["export", str(SAMPLE), "-f", "folded", "-o", out],
    "analyze --html": lambda out: ["analyze", str(SAMPLE), "--html", out],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("where", ["under-a-file", "under-proc", "long-name", "read-only"])
def test_an_output_that_cannot_be_written_is_exit_13_with_the_reason(
    tmp_path: Path, command: str, where: str
) -> None:
    with contextlib.ExitStack() as stack:
        if where == "under-a-file":
            (tmp_path / "file").write_text("x")
            out, reason = str(tmp_path / "file" / "r.html"), "is a file, not a directory"
        elif where == "under-proc":
            out, reason = "/proc/self/postmortem-report.html", ""
        elif where == "long-name":
            out, reason = str(tmp_path / ("x" * 300 + ".html")), "too long"
        else:
            out, reason = str(stack.enter_context(read_only_dir(tmp_path)) / "r.html"), "Read-only"
        code, _, err = run(COMMANDS[command](out))
    assert code == 13, err
    assert "Cannot write" in err and reason in err
    assert "Traceback" not in err and "internal error" not in err


def test_report_to_stdout_and_no_file_named_dash(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["report", str(SAMPLE), "-o", "-"])
    assert code == 0 and out.startswith("<!DOCTYPE html>")
    assert not (tmp_path / "-").exists()


def test_an_output_inside_the_dump_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "dump"
    import shutil

    shutil.copytree(SAMPLE, copy)
    before = sorted(p.name for p in copy.iterdir())
    for args in (["report", str(copy), "-o", str(copy / "r.html")],
                 ["analyze", str(copy), "--html", str(copy / "a.html")],
                 ["export", str(copy), "-f", "folded", "-o", str(copy / "x.folded")]):
        code, _, err = run(args)
        assert code == 2 and "inside the dump" in err
    assert sorted(p.name for p in copy.iterdir()) == before


def test_a_directory_as_output_is_refused_even_with_force(tmp_path: Path) -> None:
    code, _, err = run(["report", str(SAMPLE), "-o", str(tmp_path), "--force"])
    assert code == 7 and "is a directory" in err and "never replaces a directory" in err


def test_a_dump_path_that_loops_says_so(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    code, _, err = run(["analyze", str(loop)])
    assert code == 10 and "symbolic links" in err.lower()
