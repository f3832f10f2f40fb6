"""Where outputs go and how they are written: one place for every command.

An output is named after its input by default (DUMP.html beside DUMP), `-` means stdout
everywhere, nothing is replaced without `--force`, nothing is written inside the dump
being read, and every write is atomic (a temporary file beside the target, renamed).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from collectors.dump import blocked_by_a_file
from postmortem.errors import OutputExistsError, OutputUnwritableError, UsageError

STDOUT = "-"


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == STDOUT


def default_output(dump: Path, suffix: str) -> Path:
    """Beside the dump, named after it: /x/stuck-save -> /x/stuck-save.html."""
    resolved = dump.resolve()
    return resolved.parent / f"{resolved.name}{suffix}"


def inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def check_not_in_dump(path: Path, dump: Path) -> None:
    if inside(path, dump):
        raise UsageError(
            f"{path} is inside the dump {dump}: a dump is evidence, postmortem never writes into "
            "it.",
            help_text="Write the output beside the dump or anywhere else (-o PATH).",
        )


def unwritable(path: Path, exc: OSError) -> OutputUnwritableError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        reason = "a name in the path is too long"
    return OutputUnwritableError(f"Cannot write {path}: {reason}.")


def write_text(path: Path | str, text: str, force: bool = False) -> Path | None:
    """Write `text` to `path` (None: it went to stdout), atomically; refuse to replace an
    existing file without force, and a directory always."""
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    target = Path(path)
    try:
        if target.is_dir():
            raise OutputExistsError(
                f"{target} is a directory.",
                help_text="Give a file name for the output (--force never replaces a directory).",
            )
        if target.exists() and not force:
            raise OutputExistsError(f"{target} already exists.")
        in_the_way = blocked_by_a_file(target)
        if in_the_way is not None:
            raise OutputUnwritableError(
                f"Cannot write {target}: {in_the_way} is a file, not a directory."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(target, exc) from None
    tmp = target.with_name(f".{target.name[:200]}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp)
        raise unwritable(target, exc) from None
    except BaseException:
        _discard(tmp)
        raise
    return target


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
