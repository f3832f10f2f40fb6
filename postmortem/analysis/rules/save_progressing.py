"""Not a hang: a save is running and its bytes keep flowing. Say so, and estimate the end."""

from __future__ import annotations

from postmortem.analysis.checkpoint import MIN_WRITE_RATE
from postmortem.analysis.facts import Facts
from postmortem.analysis.rules.common import Case, flight_evidence, thread_evidence
from postmortem.model import Evidence, Finding, HangClass

HANG_CLASS = HangClass.SAVE_PROGRESSING

FIX = (
    "Nothing is stuck: wait for the save to finish. If saves are too slow for the save "
    "interval, save less often, use Saver(sharded=True) so each ps writes in parallel, or "
    "write to faster local storage."
)


def evaluate(facts: Facts) -> list[Finding]:
    savers = [t for t in facts.threads if t.in_save]
    if not savers or not facts.save_is_writing:
        return []
    growing = facts.growing_checkpoints
    case = Case(HANG_CLASS, 0.55)
    case.add(0.3 if growing else 0.0)
    case.add(0, *(thread_evidence(facts, t, "inside a save") for t in savers[:2]))
    estimate = ""
    for progress in growing:
        sizes = progress.temp_sizes if progress.temp_growing else progress.sizes
        times = progress.times
        span = (times[-1] - times[0]) or 1.0
        rate = (sizes[-1] - sizes[0]) / span
        case.add(
            0,
            Evidence(
                f"{progress.dir} grew from {sizes[0]:,} to {sizes[-1]:,} bytes in "
                f"{span:.1f}s ({rate / 1e6:.2f} MB/s)",
                facts.checkpoint_source(progress.dir),
            ),
        )
        previous = facts.previous_checkpoint_size(progress.dir)
        if previous and rate > 0 and previous > sizes[-1]:
            estimate = (
                f" At {rate / 1e6:.2f} MB/s it needs about {(previous - sizes[-1]) / rate:.0f}s "
                f"more to reach the previous checkpoint's {previous / 1e6:.0f} MB."
            )
        elif rate > 0:
            estimate = (
                f" It writes {rate / 1e6:.2f} MB/s; no earlier checkpoint tells its final size."
            )
    for pid in sorted(facts.saver_pids):
        rate = facts.write_rates.get(pid, 0.0)
        if rate >= MIN_WRITE_RATE:
            case.add(
                0,
                Evidence(
                    f"{facts.role(pid)} writes {rate / 1e6:.2f} MB/s",
                    facts.sources.procfs(pid),
                    facts.role(pid),
                ),
            )
    case.add(0, *flight_evidence(facts, facts.saver_pids))
    roles = ", ".join(sorted({t.role for t in savers}))
    summary = f"No hang: the checkpoint save on {roles} is progressing." + estimate
    return [case.finding(summary, FIX, None, f"Saver.save on {roles} (writing)", cap=0.9)]
