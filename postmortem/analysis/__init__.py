"""Dump -> Incident. Rules read the building blocks in `facts`; nothing here renders.

`analyze(dump)` runs every rule, ranks the findings (the one place that decides which
finding explains which), and builds the `Incident` every renderer draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from postmortem.analysis.build import build_incident
from postmortem.analysis.facts import Facts
from postmortem.analysis.logs import clear_line_caches
from postmortem.analysis.rules import RULES
from postmortem.analysis.rules.common import thread_evidence
from postmortem.analysis.threads import frames_text
from postmortem.bulk import collector_paused
from postmortem.loading import Dump
from postmortem.model import Finding, HangClass, Incident, Status, Verdict

__all__ = ["PRECEDENCE", "Facts", "Precedence", "analyze", "rank"]

NO_HANG_CONFIDENCE = 0.3  # below this, the top finding is not trusted
NO_HANG_FIX = (
    "No hang signature was found. Capture again while the job is stuck, with more "
    "rounds (--samples 5 --interval 2), --all-threads for native stacks, the ps and "
    "worker pids together, and --tf-server for each task."
)


def _job(finding: Finding) -> str:
    role = finding.culprit.role if finding.culprit and finding.culprit.role else ""
    return role.split(":", 1)[0]


def _save_stuck(facts: Facts) -> bool:
    return any(t.in_save and t.status is Status.STUCK for t in facts.threads)


def _others_step(facts: Facts) -> bool:
    down = {h.member.role for h in facts.health.values() if h.unresponsive}
    return any(p.moved and p.pid is not None and p.role not in down for p in facts.progress)


def _every_log_steps(facts: Facts) -> bool:
    logs = [p for p in facts.progress if p.pid is not None]
    return bool(logs) and all(p.moved for p in logs)


@dataclass(frozen=True)
class Precedence:
    """When both fire and `when` holds, `winner` explains `loser`: the loser is a symptom."""

    winner: HangClass
    loser: HangClass
    when: Callable[[Finding, Finding, Facts], bool]
    why: str


def _collective_aborted(facts: Facts) -> bool:
    return any(log.collective_mismatch is not None for log in facts.logs.values())


# The one place where findings are weighed against each other.
PRECEDENCE: tuple[Precedence, ...] = (
    Precedence(
        HangClass.COLLECTIVE_MISMATCH,
        HangClass.PEER_UNRESPONSIVE,
        lambda _winner, _loser, facts: _collective_aborted(facts),
        "the collective aborted on mismatched shapes: a peer's errors and exit are its echo",
    ),
    Precedence(
        HangClass.PEER_UNRESPONSIVE,
        HangClass.TRAINING_STALLED,
        lambda winner, _loser, facts: _job(winner) == "ps" or _save_stuck(facts),
        "a ps that cannot answer (or a save that never returns) stalls every step",
    ),
    Precedence(
        HangClass.TRAINING_STALLED,
        HangClass.PEER_UNRESPONSIVE,
        lambda _winner, loser, facts: _job(loser) in ("worker", "chief") and not _save_stuck(facts),
        "a stopped replica with the others waiting in training is a stalled training loop",
    ),
    *(
        Precedence(
            HangClass.DEGRADED,
            symptom,
            lambda _winner, _loser, facts: _others_step(facts),
            "the job still steps without the member that is out: degraded, not stuck",
        )
        for symptom in (HangClass.TRAINING_STALLED, HangClass.PEER_UNRESPONSIVE)
    ),
    *(
        Precedence(
            HangClass.HEALTHY,
            symptom,
            lambda _winner, _loser, facts: _every_log_steps(facts),
            "every log shows training advancing during the capture",
        )
        for symptom in (HangClass.TRAINING_STALLED, HangClass.SAVE_PROGRESSING)
    ),
    *(
        Precedence(
            cause,
            HangClass.TRAINING_STALLED,
            lambda _winner, _loser, facts: _save_stuck(facts),
            "the save itself does not return: training waiting behind it is a symptom",
        )
        for cause in (
            HangClass.STORAGE_STALL,
            HangClass.OVERSIZED_TENSOR_TRANSFER,
            HangClass.LOCK_DEADLOCK,
        )
    ),
)


def rank(findings: list[Finding], facts: Facts) -> list[Finding]:
    """Highest confidence first, then every precedence that applies: a loser moves below
    its winner, its confidence capped under the winner's, and says what explains it."""
    ranked = sorted(findings, key=lambda f: f.confidence, reverse=True)
    for rule in PRECEDENCE:
        winners = [f for f in ranked if f.hang_class is rule.winner]
        if not winners:
            continue
        winner = winners[0]
        for index, loser in enumerate(ranked):
            if loser.hang_class is not rule.loser or not rule.when(winner, loser, facts):
                continue
            ranked[index] = replace(
                loser,
                confidence=min(loser.confidence, round(winner.confidence - 0.01, 3)),
                explained_by=rule.winner,
            )
        ranked.sort(key=lambda f: f.confidence, reverse=True)
    return ranked


def _no_hang(facts: Facts) -> Finding:
    stuck = [t for t in facts.threads if t.status is Status.STUCK]
    summary = "Cannot tell: no known hang pattern matched, and no sign of progress either."
    if stuck:
        summary += f" {len(stuck)} thread(s) look stuck; see the evidence."
    return Finding(
        HangClass.NO_HANG_FOUND,
        NO_HANG_CONFIDENCE,
        summary,
        _capture_next(facts),
        None,
        "",
        tuple(thread_evidence(facts, t, f"in {frames_text(t.stack, 4)}") for t in stuck[:5]),
    )


def _capture_next(facts: Facts) -> str:
    """What the next capture should add, from what this dump lacked."""
    advice = []
    if facts.rounds < 3:
        advice.append("more rounds (--samples 5 --interval 2)")
    if facts.dump.watch.empty and facts.rounds > 0:
        advice.append("a current postmortem, which watches how often threads wake")
    if facts.dump.log_lines.empty:
        advice.append(
            "the job's logs (--log FILE for each worker's log, when stdout/stderr are not files)"
        )
    if not facts.checkpoints:
        advice.append("--checkpoint-dir DIR for the checkpoint directory")
    if not any(m.job == "ps" and m.captured for m in facts.members):
        advice.append("every ps and worker pid together (or --discover)")
    if facts.dump.frames.empty or set(facts.dump.frames["source"]) == {"pyspy"}:
        advice.append("--all-threads for native stacks")
    return (
        "Capture again while the job misbehaves, with " + "; ".join(advice) + "."
        if advice
        else NO_HANG_FIX
    )


def analyze(dump: Dump) -> Incident:
    with collector_paused():
        try:
            return _analyze(dump)
        finally:
            clear_line_caches()  # a long-lived caller keeps no dump's log lines


def _analyze(dump: Dump) -> Incident:
    facts = Facts(dump)
    findings = [finding for rule in RULES for finding in rule.evaluate(facts)]
    ranked = rank(findings, facts)
    if not ranked or ranked[0].confidence < NO_HANG_CONFIDENCE:
        ranked = rank([*ranked, _no_hang(facts)], facts)
    return build_incident(facts, Verdict(ranked[0], tuple(ranked)))
