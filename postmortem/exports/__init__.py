"""Exports to the viewers people already use: speedscope, flame graphs, Perfetto.

`export_text(dump, fmt)` returns the file's text. Stacks come from py-spy when the dump
has them (the Python view), else from the native dump (pystack, gdb).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from pathlib import Path

from postmortem.errors import OutputExistsError
from postmortem.exports.chrome_trace import trace_document
from postmortem.exports.common import log_events, process_labels, stack_samples
from postmortem.exports.folded import folded_text
from postmortem.exports.speedscope import speedscope_document
from postmortem.loading import Dump

__all__ = ["ExportFormat", "default_output_name", "export_text", "roles_of", "write_new_file"]


class ExportFormat(str, enum.Enum):
    SPEEDSCOPE = "speedscope"
    FOLDED = "folded"
    CHROME_TRACE = "chrome-trace"


SUFFIXES = {
    ExportFormat.SPEEDSCOPE: ".speedscope.json",
    ExportFormat.FOLDED: ".folded",
    ExportFormat.CHROME_TRACE: ".trace.json",
}


def default_output_name(dump_name: str, fmt: ExportFormat) -> str:
    return dump_name.rstrip("/") + SUFFIXES[fmt]


def roles_of(dump: Dump) -> tuple[dict[int, str], dict[str, int]]:
    """(pid -> role, TF server address -> pid) as the analyzer names them."""
    from postmortem.analysis.roles import build_cluster

    roles, members = build_cluster(dump.processes, dump.sockets, dump.host)
    by_address = {m.address: m.pid for m in members if m.address and m.pid is not None}
    return roles, by_address


def export_text(
    dump: Dump,
    fmt: ExportFormat,
    stacks: str = "auto",
    roles: Mapping[int, str] | None = None,
    pid_by_address: Mapping[str, int] | None = None,
) -> str:
    if roles is None or pid_by_address is None:
        roles, pid_by_address = roles_of(dump)
    labels = process_labels(dump, roles)
    if fmt is ExportFormat.SPEEDSCOPE:
        document = speedscope_document(
            stack_samples(dump.frames, stacks), labels, f"postmortem {dump.path.name}"
        )
        return json.dumps(document, separators=(",", ":")) + "\n"
    if fmt is ExportFormat.FOLDED:
        return folded_text(stack_samples(dump.frames, stacks), labels)
    document = trace_document(dump, log_events(dump), labels, pid_by_address)
    return json.dumps(document, separators=(",", ":")) + "\n"


def write_new_file(path: Path, text: str, force: bool = False) -> Path:
    """Write text to path through a temporary file; refuse to replace it without force."""
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists.")
    if path.is_dir():
        raise OutputExistsError(
            f"{path} is a directory.", help_text="Give a file name for the output."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
