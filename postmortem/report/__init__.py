"""The self-contained HTML incident report: verdict, cluster map, thread states, merged
stacks, timeline, checkpoint sizes, evidence and raw stacks, in one file that opens
offline. A renderer (postmortem.render): it draws the `Incident` and computes nothing.
"""

from __future__ import annotations

from postmortem.model import Incident
from postmortem.render import Drawing, RenderOptions
from postmortem.report.figures import build_figures
from postmortem.report.page import assemble

__all__ = ["HTML", "process_order", "render_html"]


def process_order(incident: Incident) -> list[int]:
    """Culprit first, then the cluster members with problems, then the other members in
    the analyzer's order, then the rest."""
    order: dict[int, None] = {}
    culprit = incident.verdict.culprit
    if culprit is not None and culprit.pid is not None:
        order[culprit.pid] = None
    for m in incident.members:
        if m.pid is not None and m.problems:
            order.setdefault(m.pid, None)
    for m in incident.members:
        if m.pid is not None:
            order.setdefault(m.pid, None)
    for p in incident.processes:
        order.setdefault(p.pid, None)
    return list(order)


def render_html(incident: Incident) -> str:
    order = process_order(incident)
    return assemble(incident, build_figures(incident, order), order)


def draw(incident: Incident, options: RenderOptions) -> str:
    return render_html(incident)


HTML = Drawing(
    "html",
    ".html",
    "the self-contained incident report; opens offline",
    draw,
)
