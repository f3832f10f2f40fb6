"""Every output behind one Protocol: a renderer turns an `Incident` into text.

    from postmortem.render import renderer
    text = renderer("speedscope").render(incident, RenderOptions())

Renderers draw the model and compute nothing of their own: no pandas, no loaded dump.
Heavy ones (the HTML report inlines plotly.js) are imported only when asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from postmortem.errors import UsageError
from postmortem.model import Incident


@dataclass(frozen=True)
class RenderOptions:
    color: bool = False  # text: ANSI colours
    width: int = 100  # text: columns
    stacks: str = "auto"  # speedscope / folded: auto, pyspy, pystack or gdb


class Renderer(Protocol):
    name: str
    suffix: str  # of the default output file, after the dump's name ("" for stdout only)
    description: str

    def render(self, incident: Incident, options: RenderOptions) -> str: ...


@dataclass(frozen=True)
class Drawing:
    """A Renderer made of a function: what every renderer here is."""

    name: str
    suffix: str
    description: str
    draw: Callable[[Incident, RenderOptions], str]

    def render(self, incident: Incident, options: RenderOptions) -> str:
        return self.draw(incident, options)


# name -> "module:attribute" of an object satisfying Renderer
REGISTRY: dict[str, str] = {
    "text": "postmortem.render.text:TEXT",
    "json": "postmortem.render.json:JSON",
    "html": "postmortem.report:HTML",
    "speedscope": "postmortem.exports.speedscope:SPEEDSCOPE",
    "folded": "postmortem.exports.folded:FOLDED",
    "chrome-trace": "postmortem.exports.chrome_trace:CHROME_TRACE",
}


def renderer(name: str) -> Renderer:
    try:
        module_name, _, attribute = REGISTRY[name].partition(":")
    except KeyError:
        raise UsageError(f"No output format {name!r}; known: {', '.join(REGISTRY)}.") from None
    found: Renderer = getattr(importlib.import_module(module_name), attribute)
    return found
