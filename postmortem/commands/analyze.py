"""`postmortem analyze DUMP`: the verdict, the culprit, the blocking op, the evidence, the fix."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from postmortem.outputs import check_not_in_dump, write_text


def analyze(
    dump: Annotated[Path, typer.Argument(help="Dump directory written by `postmortem capture`.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the incident as JSON on stdout.")
    ] = False,
    html: Annotated[
        Optional[Path], typer.Option("--html", help="Also write the HTML report here.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --html file.")] = False,
) -> int:
    """Name the hang class, the culprit process, the blocking op and the fix, with evidence."""
    # pandas-heavy: imported when the command runs, so `capture` stays light.
    from postmortem import cache
    from postmortem.render import RenderOptions, renderer

    if html is not None:
        check_not_in_dump(html, dump)
    incident, keep = cache.analysis(dump)
    if html is not None:
        write_text(html, renderer("html").render(incident, RenderOptions()), force=force)
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    options = RenderOptions(color=color, width=shutil.get_terminal_size((100, 24)).columns)
    typer.echo(renderer("json" if as_json else "text").render(incident, options), nl=False)
    if html is not None and not as_json:
        typer.echo(f"report: {html}")
    keep()
    return 0
