"""Knowledge in the prompt: numbered, delimited passages.

Retrieved text is data, never instructions. Three things make that hold: the system prompt is the
domain profile's (a passage cannot change it), passages sit inside a delimited block in the user
turn, and the chat renderer tokenizes every content as literal text, so a passage cannot open a
new role. A passage cannot close the block early either: delimiter look-alikes are defused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_OPEN = "<source"
_CLOSE = "</source>"
_DELIMS = re.compile(r"</?\s*sources?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Passage:
    text: str
    label: str


def defuse(text: str) -> str:
    """Make delimiter look-alikes inert (``</source>`` → ``</ source>``)."""
    return _DELIMS.sub(lambda m: m.group(0).replace("<", "< ").replace("< /", "</ "), text)


def format_sources(passages: Sequence[Passage]) -> str:
    blocks = [
        f'{_OPEN} id="{i}" from="{defuse(p.label)}">\n{defuse(p.text)}\n{_CLOSE}'
        for i, p in enumerate(passages, start=1)
    ]
    return "<sources>\n" + "\n".join(blocks) + "\n</sources>"
