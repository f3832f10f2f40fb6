"""`postmortem report DUMP -o report.html`: the self-contained HTML incident report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    dump: Annotated[Path, typer.Argument(help="Dump directory written by `postmortem capture`.")],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o", help="HTML file to write. Default: DUMP.html beside the dump."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> int:
    """Write one HTML file that opens offline: verdict, cluster map, thread states, merged
    stacks, timeline, checkpoint sizes, evidence and raw stacks. Attach it to the incident."""
    # pandas/plotly-heavy: imported when the command runs, so `capture` stays light.
    from postmortem.analysis import analyze as run_analysis
    from postmortem.loading import load_dump
    from postmortem.report import default_report_path, write_report

    loaded = load_dump(dump)
    verdict = run_analysis(loaded)
    target = output if output is not None else default_report_path(dump)
    write_report(loaded, verdict, target, force=force)
    size = target.stat().st_size
    typer.echo(f"report: {target} ({size / 1e6:.1f} MB)")
    return 0
