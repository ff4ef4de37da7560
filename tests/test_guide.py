"""docs/guide.zh.md keeps step with docs/guide.md: the same sections, `vss` commands and options, and
the images it shows exist. Compared at test time, so an edit to one guide without the other fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMAND = re.compile(r"(?:^|[\s`(])vss (?:\[[^\]]*\] )?((?:data|runs) [a-z]+|[a-z][a-z-]*)", re.M)
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def commands(text: str) -> set[str]:
    """`vss <command>` (with `data`/`runs` sub-commands) as written in code blocks and inline code."""
    return {c for code in CODE.findall(text) for c in COMMAND.findall(code)}


@pytest.fixture(scope="module")
def guides() -> tuple[str, str]:
    return _text("guide.md"), _text("guide.zh.md")


def test_both_guides_list_the_same_commands(guides):
    english, chinese = (commands(t) for t in guides)
    assert english, "no `vss <command>` found in guide.md"
    assert english - chinese == set(), "commands in guide.md missing from guide.zh.md"
    assert chinese - english == set(), "commands in guide.zh.md missing from guide.md"


def test_both_guides_list_the_same_options(guides):
    english, chinese = (set(OPTION.findall(t)) for t in guides)
    assert len(english) > 30
    assert english - chinese == set(), "options in guide.md missing from guide.zh.md"
    assert chinese - english == set(), "options in guide.zh.md missing from guide.md"


def test_same_number_of_sections_and_the_same_images(guides):
    english, chinese = guides
    for level in ("## ", "### "):
        count = [len([line for line in t.splitlines() if line.startswith(level)]) for t in guides]
        assert count[0] == count[1], f"{level.strip()} sections: guide.md {count[0]}, guide.zh.md {count[1]}"
    assert IMAGE.findall(english) == IMAGE.findall(chinese)
    for image in IMAGE.findall(english):
        assert (DOCS / image).is_file(), f"{image} is missing"


def test_every_registered_command_is_in_the_guide(guides):
    from vss_cli.cli.app import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    documented = commands(guides[0])
    assert {n for n in names if n not in documented} == set()


def test_every_command_option_is_in_the_guide(guides):
    """Each option of each `vss` command appears in guide.md (either form of a --x/--no-x flag)."""
    import typer.main

    from vss_cli.cli.app import app

    documented = set(OPTION.findall(guides[0]))
    missing = []

    def walk(command, path):
        for param in getattr(command, "params", []):
            forms = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
            if forms and not documented & set(forms) and forms != ["--help"]:
                missing.append(f"vss {' '.join(path)} {forms[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    assert missing == [], f"options missing from docs/guide.md: {missing}"
