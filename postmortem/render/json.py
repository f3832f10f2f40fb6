"""`--json`: the incident document (postmortem.serialize, docs/incident-json.md)."""

from __future__ import annotations

import json
from typing import Any

from postmortem.model import Incident
from postmortem.render import Drawing, RenderOptions
from postmortem.serialize import incident_document

orjson: Any
try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; the standard library otherwise
    orjson = None


def draw(incident: Incident, options: RenderOptions) -> str:
    # Compact: a 1,000-process incident is tens of MB, and `jq .` indents it.
    document = incident_document(incident)
    if orjson is not None:  # ~10x faster; the document holds no NaN (the writer made it null)
        return str(orjson.dumps(document).decode()) + "\n"
    return json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n"


JSON = Drawing(
    "json",
    ".incident.json",
    "the incident model as JSON, for scripts",
    draw,
)
