"""The self-contained HTML incident report: verdict, cluster map, thread states, merged
stacks, timeline, checkpoint sizes, evidence and raw stacks, in one file that opens
offline.

`render_html(dump, verdict)` returns the page; `write_report(...)` writes it without
replacing an existing file unless asked. The figures' data come from the pure functions
in `postmortem.report.figures`; nothing here analyzes.
"""

from __future__ import annotations

from pathlib import Path

from postmortem.analysis import Verdict
from postmortem.exports.common import log_events, pick_stack_source, process_labels, stack_samples
from postmortem.loading import Dump
from postmortem.report.figures import (
    FigureSpec,
    checkpoint_figure,
    cluster_map_figure,
    stack_tree_figure,
    thread_states_figure,
    timeline_figure,
)
from postmortem.report.page import assemble

__all__ = ["build_figures", "default_report_path", "render_html", "write_report"]


def roles_from_verdict(verdict: Verdict) -> dict[int, str]:
    roles = {}
    for m in verdict.facts.get("members", []):
        if m.get("pid") is not None:
            roles[int(m["pid"])] = str(m["role"])
    for t in verdict.facts.get("threads", []):
        roles.setdefault(int(t["pid"]), str(t.get("role")))
    return roles


def process_order(dump: Dump, verdict: Verdict) -> list[int]:
    """Culprit first, then cluster members in the analyzer's order, then the rest."""
    order: list[int] = []
    culprit = verdict.finding.culprit
    if culprit is not None and culprit.pid is not None:
        order.append(int(culprit.pid))
    for m in verdict.facts.get("members", []):
        if m.get("pid") is not None and int(m["pid"]) not in order:
            order.append(int(m["pid"]))
    order += [int(p) for p in dump.processes["pid"] if int(p) not in order]
    return order


def build_figures(dump: Dump, verdict: Verdict) -> dict[str, FigureSpec]:
    facts = verdict.facts
    roles = roles_from_verdict(verdict)
    labels = process_labels(dump, roles)
    culprit = verdict.finding.culprit
    source = pick_stack_source(dump.frames) or "none"
    return {
        "cluster": cluster_map_figure(
            facts.get("members", []),
            facts.get("wait_for", []),
            facts.get("threads", []),
            culprit.role if culprit else None,
        ),
        "threads": thread_states_figure(
            dump, facts.get("threads", []), process_order(dump, verdict)
        ),
        "stacks": stack_tree_figure(
            stack_samples(dump.frames),
            labels,
            source,
            culprit.pid if culprit else None,
            {
                (int(t["pid"]), int(t["tid"])): str(t.get("status"))
                for t in facts.get("threads", [])
            },
        ),
        "timeline": timeline_figure(dump, log_events(dump), labels),
        "checkpoint": checkpoint_figure(dump, facts.get("checkpoint", {})),
    }


def render_html(dump: Dump, verdict: Verdict) -> str:
    roles = roles_from_verdict(verdict)
    labels = process_labels(dump, roles)
    return assemble(dump, verdict, build_figures(dump, verdict), log_events(dump), labels, roles)


def default_report_path(dump_path: Path) -> Path:
    resolved = dump_path.resolve()
    return resolved.parent / f"{resolved.name}.html"


def write_report(dump: Dump, verdict: Verdict, path: Path | str, force: bool = False) -> Path:
    from postmortem.exports import write_new_file

    return write_new_file(Path(path), render_html(dump, verdict), force=force)
