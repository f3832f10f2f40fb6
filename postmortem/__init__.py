"""postmortem: why a distributed TensorFlow job is stuck saving a checkpoint.

``postmortem.load(path)`` returns a dump as pandas DataFrames (imported lazily, so the
capture side never needs pandas).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from postmortem.loading import Dump


def load(path: Any) -> Dump:
    """Load a dump directory written by `postmortem capture` into DataFrames."""
    from postmortem.loading import load_dump

    return load_dump(path)
