"""`postmortem export DUMP --format speedscope|folded|chrome-trace`: open a dump elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from postmortem.errors import UsageError

FORMATS = ("speedscope", "folded", "chrome-trace")


def export(
    dump: Annotated[Path, typer.Argument(help="Dump directory written by `postmortem capture`.")],
    fmt_name: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="speedscope: stacks, one profile per process (speedscope.app); "
            "folded: flame-graph input (flamegraph.pl, inferno); chrome-trace: TF profiler and "
            "log events (ui.perfetto.dev, chrome://tracing).",
        ),
    ],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="File to write ('-' for stdout). Default: beside the dump, "
            "named after it (DUMP.speedscope.json, DUMP.folded, DUMP.trace.json).",
        ),
    ] = None,
    stacks: Annotated[
        str, typer.Option(help="Stack source: auto (py-spy, else native), pyspy, pystack or gdb.")
    ] = "auto",
    force: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> int:
    """Export stacks to speedscope or folded format, events to a Chrome/Perfetto trace."""
    # pandas-heavy: imported when the command runs, so `capture` stays light.
    from postmortem.exports import ExportFormat, default_output_name, export_text, write_new_file
    from postmortem.loading import load_dump

    if fmt_name not in FORMATS:
        raise UsageError(f"--format {fmt_name!r} is not one of {', '.join(FORMATS)}.")
    fmt = ExportFormat(fmt_name)
    loaded = load_dump(dump)
    text = export_text(loaded, fmt, stacks=stacks)
    if output is not None and str(output) == "-":
        sys.stdout.write(text)
        return 0
    target = (
        output
        if output is not None
        else dump.parent / default_output_name(dump.resolve().name, fmt)
    )
    write_new_file(target, text, force=force)
    typer.echo(f"{fmt.value}: {target}")
    return 0
