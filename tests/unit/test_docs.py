"""The documentation's examples are run, so they cannot rot (issue 17, item 10).

The README and docs/ hold code a reader copies: the Python blocks of docs/testing.md run here
as the tests they are, the topology pictures must be what `streamer topology` prints, every
relative link of the README must name a file, and the configuration reference must be
generated from the Settings model. (The README's `streamer send` line runs against a broker in
tests/integration/test_apps.py; `make docs` builds the site in strict mode.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from streamer.settings import Settings, reference_markdown
from tests.kafkatools import ROOT, run_cli

DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


@pytest.mark.parametrize("name", ["test_wordcount", "test_malformed_order_is_dead_lettered"])
def test_testing_page_examples_pass(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMER_DEMO_PREFIX", raising=False)
    (block,) = [b for b in _blocks(DOCS / "testing.md", "python") if f"def {name}(" in b]
    namespace: dict[str, object] = {}
    exec(compile(block, f"docs/testing.md ({name})", "exec"), namespace)
    test = namespace[name]
    assert callable(test)
    test()


def test_topology_pictures_are_what_the_command_prints() -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMER_DEMO_PREFIX"}
    result = run_cli("topology", "apps.orders", "--format", "mermaid", env=env)
    assert result.returncode == 0, result.stderr
    drawn = result.stdout
    for page in (ROOT / "README.md", DOCS / "agents.md"):
        assert _blocks(page, "mermaid") == [drawn], page


def test_readme_links_name_files() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert links
    for link in links:
        assert (ROOT / link).exists(), link


def test_configuration_reference_is_generated_from_settings() -> None:
    assert "<!-- settings-reference -->" in (DOCS / "configuration.md").read_text()
    table = reference_markdown().splitlines()
    assert len(table) == 2 + len(Settings.model_fields)
    for name in Settings.model_fields:
        assert any(row.startswith(f"| `{name}` | `STREAMER_{name.upper()}` |") for row in table)
    assert all(row.count(" | ") == 3 for row in table[2:]), "a description broke the table"
