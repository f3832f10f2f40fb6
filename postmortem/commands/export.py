"""`postmortem export DUMP --format speedscope|folded|chrome-trace`: open a dump elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from postmortem.errors import UsageError
from postmortem.outputs import check_not_in_dump, default_output, is_stdout, write_text

FORMATS = ("speedscope", "folded", "chrome-trace")
STACKS = ("auto", "pyspy", "pystack", "gdb")


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
    from postmortem import cache
    from postmortem.render import RenderOptions, renderer

    if fmt_name not in FORMATS:
        raise UsageError(f"--format {fmt_name!r} is not one of {', '.join(FORMATS)}.")
    if stacks not in STACKS:
        raise UsageError(f"--stacks {stacks!r} is not one of {', '.join(STACKS)}.")
    chosen = renderer(fmt_name)
    target = output if output is not None else default_output(dump, chosen.suffix)
    if not is_stdout(target):
        check_not_in_dump(target, dump)
    incident, keep = cache.analysis(dump)
    text = chosen.render(incident, RenderOptions(stacks=stacks))
    written = write_text(target, text, force=force)
    if written is not None:
        typer.echo(f"{fmt_name}: {written}")
    keep()
    return 0
