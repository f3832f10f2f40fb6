"""Exports to the viewers people already use: speedscope, flame graphs, Perfetto.

Each is a renderer (postmortem.render): it reads the incident model only. Stacks come
from py-spy when the dump has them (the Python view), else from the native dump (pystack,
gdb), or from the source `--stacks` names.
"""

from __future__ import annotations

from postmortem.errors import UsageError
from postmortem.model import Incident, StackSample, StackSource

STACK_CHOICES = ("auto", *(s.value for s in StackSource))


def pick_stack_source(incident: Incident, choice: str = "auto") -> StackSource | None:
    """The stack source to export: py-spy when the dump has it, else the native dump; a
    named source the dump lacks is a usage error, not an empty file."""
    present = incident.stack_sources()
    if choice == "auto":
        return present[0] if present else None
    try:
        source = StackSource(choice)
    except ValueError:
        raise UsageError(f"--stacks {choice!r} is not one of {', '.join(STACK_CHOICES)}.") from None
    if source not in present:
        have = ", ".join(s.value for s in present) or "none"
        raise UsageError(
            f"The dump holds no {source.value} stacks (it has: {have}).",
            help_text="Use --stacks auto, or capture with --all-threads for native stacks.",
        )
    return source


def samples_for(incident: Incident, choice: str = "auto") -> list[StackSample]:
    source = pick_stack_source(incident, choice)
    if source is None:
        return []
    return [s for s in incident.stack_samples if s.source is source]
