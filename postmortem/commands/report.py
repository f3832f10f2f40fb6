"""`postmortem report DUMP -o report.html`: the self-contained HTML incident report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from postmortem.outputs import check_not_in_dump, default_output, is_stdout, write_text


def report(
    dump: Annotated[Path, typer.Argument(help="Dump directory written by `postmortem capture`.")],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="HTML file to write ('-' for stdout). Default: DUMP.html beside the dump.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> int:
    """Write one HTML file that opens offline: verdict, cluster map, thread states, merged
    stacks, timeline, checkpoint sizes, evidence and raw stacks. Attach it to the incident."""
    # pandas/plotly-heavy: imported when the command runs, so `capture` stays light.
    from postmortem import cache
    from postmortem.render import RenderOptions, renderer

    html = renderer("html")
    target = output if output is not None else default_output(dump, html.suffix)
    if not is_stdout(target):
        check_not_in_dump(target, dump)
    incident, keep = cache.analysis(dump)
    text = html.render(incident, RenderOptions())
    written = write_text(target, text, force=force)
    if written is not None:
        typer.echo(f"report: {written} ({written.stat().st_size / 1e6:.1f} MB)", err=False)
    keep()
    return 0
