"""The verdict on a terminal: class, culprit, blocking op, fix, the evidence, and what of
the dump could not be used."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from postmortem.model import Culprit, Incident, os_pid
from postmortem.render import Drawing, RenderOptions

MAX_PROBLEMS = 10


def culprit_text(culprit: Culprit | None) -> str:
    if culprit is None:
        return "none"
    pid = os_pid(culprit.pid) if culprit.pid is not None else "absent"
    return f"{culprit.role} (pid {pid}, host {culprit.host})" + (
        f": {culprit.state}" if culprit.state else ""
    )


def coverage_lines(incident: Incident) -> list[str]:
    """How much of the dump the verdict rests on, and what could not be read."""
    info = incident.dump
    lines = []
    if info.processes_loaded < info.processes_in_manifest:
        lines.append(
            f"read {info.processes_loaded} of the {info.processes_in_manifest} processes the "
            "dump lists"
        )
    problems = incident.load_problems
    if problems:
        lines.append(f"{len(problems)} file(s) of the dump could not be used:")
        lines += [f"  {p.file}: {p.problem}" for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_PROBLEMS} more (see --json)")
    if not info.complete:
        lines.append("the capture was interrupted; the dump holds only the rounds it finished")
    return lines


def draw(incident: Incident, options: RenderOptions) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=options.color,
        no_color=not options.color,
        width=options.width,
        highlight=False,
    )
    top = incident.verdict.finding
    body = (
        f"[bold]{top.hang_class.value}[/] (confidence {top.confidence:.0%})\n\n"
        f"{escape(top.summary)}\n\n[bold]culprit[/]      {escape(culprit_text(top.culprit))}\n"
        f"[bold]blocking op[/]  {escape(top.blocking_op or '-')}\n\n"
        f"[bold]fix[/]  {escape(top.fix)}"
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
    others = incident.verdict.findings[1:]
    if others:
        console.print(
            "other findings: "
            + ", ".join(
                f"{f.hang_class.value} ({f.confidence:.0%}"
                + (f", explained by {f.explained_by.value}" if f.explained_by else "")
                + ")"
                for f in others
            ),
            markup=False,
        )
    for risk in incident.risks:
        console.print(f"risk: {risk.what}. Fix: {risk.fix} ({risk.source})", markup=False)
    if incident.strategy.value:
        console.print(
            f"strategy: {incident.strategy.value} ({incident.strategy_evidence})", markup=False
        )
    for line in coverage_lines(incident):
        console.print(f"note: {line}" if not line.startswith("  ") else line, markup=False)
    return out.getvalue()


TEXT = Drawing("text", ".txt", "the verdict and its evidence, for a terminal", draw)
