"""Multi-objective studies (maximise a score, minimise a size): NSGA-II and TPE find a front,
and `show` and `report` give exactly the non-dominated trials."""

from __future__ import annotations

import pytest

import studyhall
from studyhall.cli import main
from studyhall.reports import write_report
from tests.reports.conftest import assert_real_png

DIRECTIONS = ["maximize", "minimize"]


def _spec(name: str, sampler: str) -> dict:
    return {"name": name, "objective": "tests.reports.objectives:accuracy_and_size",
            "space": {"x": {"low": -4.5, "high": 4.5}, "y": {"low": -4.5, "high": 4.5}},
            "directions": DIRECTIONS, "sampler": sampler, "n_trials": 16, "seed": 4}


def _dominates(a, b) -> bool:
    """a is at least as good as b on both objectives and better on one."""
    no_worse = a[0] >= b[0] and a[1] <= b[1]
    return no_worse and (a[0] > b[0] or a[1] < b[1])


def _front(handle) -> list[int]:
    done = handle.trials(["COMPLETE"])
    return sorted(t.number for t in done
                  if not any(_dominates(o.values, t.values) for o in done if o is not t))


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('pareto') / 's.db'}"
    for sampler in ("nsga2", "tpe"):
        studyhall.run_study(_spec(f"pareto-{sampler}", sampler), storage=url)
    return url


@pytest.fixture(params=["nsga2", "tpe"])
def study(request, url):
    return f"pareto-{request.param}", url


def test_nsga2_and_tpe_run_a_two_objective_study_to_its_budget(study):
    handle = studyhall.open_study(*study)
    assert handle.directions == tuple(DIRECTIONS)
    assert handle.spec.sampler.name == study[0].split("-")[1]
    assert handle.state_counts()["COMPLETE"] == 16
    assert sorted(t.number for t in handle.best_trials) == _front(handle)
    assert len(_front(handle)) >= 2  # a trade-off, not a single winner


def test_show_lists_the_pareto_front(study, capsys):
    name, url = study
    assert main(["show", name, "--storage", url, "--top", "50"]) == 0
    out = capsys.readouterr().out
    front = _front(studyhall.open_study(name, url))
    assert f"Pareto front ({len(front)} trials, directions maximize, minimize):" in out
    table = out.split("Pareto front", 1)[1].splitlines()[3:]
    assert sorted(int(line.split()[0]) for line in table if line.strip()) == front


def test_report_draws_the_pareto_front_of_a_tpe_study_and_lists_its_trials(url, tmp_path):
    # NSGA-II's report is in test_report.py.
    handle = studyhall.open_study("pareto-tpe", url)
    index = write_report(handle, tmp_path / "r")
    assert_real_png(tmp_path / "r" / "pareto.png")
    text = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "Pareto front" in text
    section = text.split("Pareto front", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert sorted(int(r.split("|")[1]) for r in rows[1:]) == _front(handle)
    assert index.is_file()
