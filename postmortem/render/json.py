"""`--json`: the incident document (postmortem.serialize, docs/incident-json.md)."""

from __future__ import annotations

import json

from postmortem.model import Incident
from postmortem.render import Drawing, RenderOptions
from postmortem.serialize import incident_document


def draw(incident: Incident, options: RenderOptions) -> str:
    # Compact: a 1,000-process incident is tens of MB, and `jq .` indents it.
    document = incident_document(incident)
    return json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n"


JSON = Drawing(
    "json",
    ".incident.json",
    "the incident model as JSON, for scripts",
    draw,
)
