"""Cleaning text that came from the web (CounselChat answers are HTML) or from a spreadsheet."""

from __future__ import annotations

import html
import re

import nh3


def strip_html(text: str) -> str:
    # nh3 (ammonia) keeps the words of every tag and drops script/style content; it HTML-escapes
    # the text, which unescape undoes (entities included).
    return html.unescape(nh3.clean(text, tags=set(), strip_comments=True))


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs/NBSP to one space per line, strip lines, keep at most one blank line."""
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
