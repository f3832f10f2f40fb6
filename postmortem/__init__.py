"""postmortem: why a distributed TensorFlow job is stuck saving a checkpoint.

    import postmortem
    dump = postmortem.load("dump/")          # the dump as pandas DataFrames
    incident = postmortem.analyze(dump)      # postmortem.model.Incident
    incident.verdict.hang_class, incident.verdict.culprit

pandas is imported lazily, so the capture side never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from postmortem.loading import Dump
    from postmortem.model import Incident


def load(path: Any) -> Dump:
    """Load a dump directory written by `postmortem capture` into DataFrames."""
    from postmortem.loading import load_dump

    return load_dump(path)


def analyze(dump: Any) -> Incident:
    """The incident found in a dump: a loaded `Dump`, or a dump directory's path."""
    from postmortem.analysis import analyze as run_analysis
    from postmortem.loading import Dump as LoadedDump

    return run_analysis(dump if isinstance(dump, LoadedDump) else load(dump))
