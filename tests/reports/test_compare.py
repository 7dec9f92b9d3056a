"""The sampler shoot-out: a small one on Beale, its table, studies, plot and resume; bad input."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import studyhall
from studyhall import SpecError
from studyhall.cli import main
from studyhall.reports import compare_samplers
from tests.conftest import beale_spec
from tests.reports.conftest import assert_real_png

SAMPLERS = ("grid", "random", "tpe")
REPEATS = 2
TRIALS = 8


def _spec(name: str = "beale") -> dict:
    """Beale on a stepped space (7 x 7 points), so grid, random and TPE search the same space;
    TPE's own options (a short random start-up) apply to the shoot-out's TPE studies."""
    return beale_spec(name, sampler="grid", n_trials=TRIALS, seed=11) | {
        "sampler": {"name": "tpe", "n_startup_trials": 4}}


@pytest.fixture(scope="module")
def shootout(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    url = f"sqlite:///{root / 'shootout.db'}"
    seen = []
    result = compare_samplers(_spec(), ",".join(SAMPLERS), REPEATS, storage=url,
                              out=root / "out", on_progress=seen.append)
    return result, url, root / "out", seen


def _values(url: str, study: str) -> list[float]:
    handle = studyhall.open_study(study, url)
    return [t.value for t in sorted(handle.trials(["COMPLETE"]), key=lambda t: t.number)]


def test_every_sampler_and_repeat_runs_in_its_own_study_of_one_storage(shootout):
    result, url, _, _ = shootout
    names = {s.name: s for s in studyhall.list_studies(url)}
    expected = {f"beale.{s}.{r}" for s in SAMPLERS for r in range(1, REPEATS + 1)}
    assert set(names) == expected
    for name in expected:
        handle = studyhall.open_study(name, url)
        assert handle.state_counts()["COMPLETE"] == TRIALS
        sampler = name.split(".")[1]
        assert handle.spec.sampler.name == sampler
        options = {"n_startup_trials": 4} if sampler == "tpe" else {}
        assert dict(handle.spec.sampler.options) == options
        assert handle.spec.seed == 11 + int(name.split(".")[2]) - 1  # a new seed per repeat
    # Different seeds give the repeats different trials.
    assert _values(url, "beale.random.1") != _values(url, "beale.random.2")


def test_each_run_is_the_best_so_far_curve_of_its_study(shootout):
    result, url, _, _ = shootout
    assert len(result.runs) == len(SAMPLERS) * REPEATS
    for run in result.runs:
        values = _values(url, run.study)
        assert list(run.best_so_far) == list(np.minimum.accumulate(values))
        assert len(run.seconds) == TRIALS and list(run.seconds) == sorted(run.seconds)
        assert run.best == min(values)


def test_the_default_target_is_the_best_value_moved_a_tenth_towards_the_median(shootout):
    result, url, _, _ = shootout
    values = [v for run in result.runs for v in _values(url, run.study)]
    best, median = min(values), float(np.median(values))
    assert result.target == pytest.approx(best + 0.1 * (median - best))
    assert f"{best:.6g}" in result.target_note and f"{median:.6g}" in result.target_note


def test_trials_to_target_is_the_first_trial_at_or_below_it(shootout):
    result, url, _, _ = shootout
    reached = 0
    for run in result.runs:
        hits = [k + 1 for k, v in enumerate(run.best_so_far) if v <= result.target]
        assert run.trials_to_target == (hits[0] if hits else None)
        if hits:
            reached += 1
            assert run.seconds_to_target == run.seconds[hits[0] - 1]
    assert reached >= 1  # the run that found the best value reached a target above it


def test_the_table_gives_each_sampler_its_reach_count_and_median(shootout):
    result, _, out, _ = shootout
    assert [s.sampler for s in result.summaries] == list(SAMPLERS)
    for s in result.summaries:
        mine = [r for r in result.runs if r.sampler == s.sampler]
        assert s.repeats == REPEATS
        assert s.reached == sum(r.trials_to_target is not None for r in mine)
        steps = sorted(math.inf if r.trials_to_target is None else r.trials_to_target for r in mine)
        expected = float(np.median(steps))
        assert s.median_trials == (expected if math.isfinite(expected) else None)
        assert s.best == min(r.best for r in mine)
    with (out / "compare.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["sampler", "repeats", "reached T"]
    assert [tuple(r) for r in rows[1:]] == result.table()
    assert rows[1][2] == f"{result.summaries[0].reached}/{REPEATS}"


def test_the_markdown_holds_the_table_the_target_and_the_plot(shootout):
    result, _, out, _ = shootout
    text = (out / "compare.md").read_text(encoding="utf-8")
    assert result.target_note in text
    assert "![best value so far per sampler](compare.png)" in text
    for row in result.table():
        assert "| " + " | ".join(row) + " |" in text
    with (out / "runs.csv").open(newline="", encoding="utf-8") as f:
        runs = list(csv.DictReader(f))
    assert [r["study"] for r in runs] == [r.study for r in result.runs]


def test_the_plot_is_a_png_with_a_coloured_curve_per_sampler(shootout):
    result, _, out, _ = shootout
    assert result.files["plot"] == out / "compare.png"
    image = assert_real_png(out / "compare.png")[..., :3]
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    blue = ((b - r > 0.3) & (b - g > 0.2)).sum()  # grid (tab:blue)
    orange = ((r - b > 0.5) & (g - b > 0.2) & (r - g > 0.2)).sum()  # random (tab:orange)
    green = ((g - r > 0.2) & (g - b > 0.2)).sum()  # tpe (tab:green)
    assert blue > 200 and orange > 200 and green > 200, (blue, orange, green)


def test_progress_counts_up_to_every_trial_of_the_shoot_out(shootout):
    _, _, _, seen = shootout
    total = len(SAMPLERS) * REPEATS * TRIALS
    assert {p.total for p in seen} == {total}
    done = [p.done for p in seen]
    assert done == sorted(done) and done[-1] == total


def test_a_rerun_reads_the_finished_studies_without_running_a_trial(shootout, tmp_path):
    result, url, _, _ = shootout
    before = {r.study: [t.datetime_start for t in studyhall.open_study(r.study, url).trials()]
              for r in result.runs}
    again = compare_samplers(_spec(), SAMPLERS, REPEATS, storage=url)
    after = {r.study: [t.datetime_start for t in studyhall.open_study(r.study, url).trials()]
             for r in again.runs}
    assert after == before
    assert again.table() == result.table() and again.files == {}


def test_a_larger_budget_continues_each_study_from_its_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    compare_samplers(_spec("grow"), "random", 1, n_trials=4, storage=url)
    first = _values(url, "grow.random.1")
    result = compare_samplers(_spec("grow"), "random", 1, n_trials=7, storage=url)
    assert _values(url, "grow.random.1")[:4] == first
    assert len(result.runs[0].best_so_far) == 7


def test_a_grid_stops_when_its_points_run_out(tmp_path):
    spec = _spec("small") | {"space": {"x": {"low": 1.5, "high": 4.5, "step": 1.5},
                                       "y": [0.0, 0.5]}}
    result = compare_samplers(spec, "grid,random", 1, n_trials=9,
                              storage=f"sqlite:///{tmp_path / 's.db'}", target=0.0)
    grid, random = result.runs
    assert len(grid.best_so_far) == 6 and len(random.best_so_far) == 9
    assert grid.trials_to_target is not None  # (3, 0.5) is on the grid: Beale's minimum 0
    assert result.target_note == "T = 0: given"


BAD = [
    (["--samplers", "grid,tpee"], "unknown sampler 'tpee' in `samplers` (did you mean 'tpe'?); "
     "allowed: grid, random, tpe"),
    (["--samplers", "tpe,tpe"], "`samplers` names 'tpe' twice"),
    (["--repeats", "0"], "argument --repeats: must be a positive integer; got '0'"),
    (["--target", "nan"], "argument --target: must be a finite number; got 'nan'"),
    (["--target", "best"], "argument --target: must be a finite number; got 'best'"),
    (["--samplers", "grid", "--continuous"], "sampler 'grid' cannot run this spec: `space.x`"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m.split(":")[0][:30] for _, m in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path, capsys):
    import yaml

    spec = _spec("bad")
    if "--continuous" in args:
        args = [a for a in args if a != "--continuous"]
        spec = beale_spec("bad", sampler="tpe", n_trials=TRIALS)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    argv = ["compare", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}",
            "--out", str(tmp_path / "out"), *args]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_a_multi_objective_spec_is_refused(tmp_path):
    spec = {"name": "two", "objective": "tests.objectives.helpers:two_values",
            "space": {"a": [0.0, 0.5, 1.0]}, "directions": ["minimize", "maximize"],
            "n_trials": 3}
    with pytest.raises(SpecError, match="a shoot-out needs one objective; a spec dict has "
                       "directions minimize, maximize"):
        compare_samplers(spec, "random", 1, storage=f"sqlite:///{tmp_path / 's.db'}")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_prints_the_table_and_says_how_the_target_was_chosen(tmp_path, capsys):
    assert main(["compare", "beale-tpe", "--samplers", "random,tpe", "--repeats", "1",
                 "--trials", "5", "--storage", f"sqlite:///{tmp_path / 's.db'}", "-q"]) == 0
    out = capsys.readouterr().out
    assert "sampler shoot-out of beale-tpe in sqlite:///" in out
    assert "T = " in out and "moved 10% of the way to the median trial" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("sampler  "))
    assert [line.split()[0] for line in lines[header + 2:header + 4]] == ["random", "tpe"]
    assert (tmp_path / "compare-beale-tpe" / "compare.png").is_file()
