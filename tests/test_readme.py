"""The README's promises: its commands are the ones CI runs, and its presets exist."""

from __future__ import annotations

import re
from pathlib import Path

from studyhall import list_presets

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_the_readme_gives_two_setup_commands_and_ci_runs_the_test_one():
    run, test = _commands()
    assert "studyhall run breast-cancer-tpe" in run
    assert "pytest" in test
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_preset_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    objectives = {"beale", "breast_cancer", "synthetic", "mnist"}
    named = set(re.findall(r"^\| `([a-z0-9-]+)` \|", readme, flags=re.M)) - objectives
    assert named and named <= set(list_presets())
