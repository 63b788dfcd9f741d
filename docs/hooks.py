"""MkDocs hook: pages that say ``<!-- settings-reference -->`` get the settings table,
generated from :class:`streamer.settings.Settings`, so the reference cannot drift."""

from __future__ import annotations

from typing import Any

from streamer.settings import reference_markdown

MARKER = "<!-- settings-reference -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return markdown.replace(MARKER, reference_markdown())
