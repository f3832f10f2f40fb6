"""`postmortem analyze DUMP`: the verdict, the culprit, the blocking op, the evidence, the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # pandas-heavy: imported when the command runs, so `capture` stays light
    from postmortem.analysis import Verdict

VERDICT_SCHEMA_VERSION = 1


def verdict_document(verdict: Verdict, dump_path: Path) -> dict[str, Any]:
    return {
        "schema_version": VERDICT_SCHEMA_VERSION,
        "dump": str(dump_path),
        "verdict": verdict.to_json(),
        "findings": [f.to_json() for f in verdict.findings],
        "cluster": verdict.facts.get("members", []),
        "wait_for": verdict.facts.get("wait_for", []),
        "wait_for_sinks": verdict.facts.get("wait_for_sinks", []),
        "stack_classes": verdict.facts.get("stack_classes", []),
        "outliers": verdict.facts.get("outliers", []),
    }


def analyze(
    dump: Annotated[Path, typer.Argument(help="Dump directory written by `postmortem capture`.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict as JSON on stdout.")
    ] = False,
    html: Annotated[
        Optional[Path], typer.Option("--html", help="Also write the HTML report here.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --html file.")] = False,
) -> int:
    """Name the hang class, the culprit process, the blocking op and the fix, with evidence."""
    from postmortem.analysis import analyze as run_analysis
    from postmortem.loading import load_dump

    loaded = load_dump(dump)
    verdict = run_analysis(loaded)
    if html is not None:
        from postmortem.report import write_report

        write_report(loaded, verdict, html, force=force)
    if as_json:
        typer.echo(json.dumps(verdict_document(verdict, dump), indent=1, default=str))
        return 0
    print_verdict(
        verdict, loaded.manifest, Console(no_color="NO_COLOR" in os.environ, highlight=False)
    )
    if html is not None:
        typer.echo(f"report: {html}")
    return 0


def print_verdict(verdict: Verdict, manifest: dict[str, Any], console: Console) -> None:
    top = verdict.finding
    culprit = top.culprit
    who = "none"
    if culprit is not None:
        who = (
            f"{culprit.role} (pid {culprit.pid if culprit.pid is not None else 'absent'}, "
            f"host {culprit.host})" + (f": {culprit.state}" if culprit.state else "")
        )
    body = (
        f"[bold]{top.hang_class.value}[/] (confidence {top.confidence:.0%})\n\n"
        f"{_escape(top.summary)}\n\n[bold]culprit[/]      {_escape(who)}\n"
        f"[bold]blocking op[/]  {_escape(top.blocking_op or '-')}\n\n"
        f"[bold]fix[/]  {_escape(top.fix)}"
    )
    console.print(Panel(body, title="postmortem verdict", title_align="left", expand=True))
    if top.evidence:
        table = Table(title="evidence", title_justify="left", show_lines=False, expand=True)
        table.add_column("process", no_wrap=True)
        table.add_column("fact")
        table.add_column("source", overflow="fold")
        for e in top.evidence:
            table.add_row(Text(e.process), Text(e.what), Text(e.source))
        console.print(table)
    others = verdict.findings[1:]
    if others:
        console.print(
            "other findings: "
            + ", ".join(f"{f.hang_class.value} ({f.confidence:.0%})" for f in others),
            markup=False,
        )
    if not manifest.get("complete", True):
        console.print(
            "note: the capture was interrupted; the dump holds only the rounds it finished.",
            markup=False,
        )


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
