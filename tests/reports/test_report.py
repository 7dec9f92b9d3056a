from __future__ import annotations

import json
import math
from collections import defaultdict
from html.parser import HTMLParser

import numpy as np
import pytest

from studyhall import SpecError
from studyhall.cli import main
from studyhall.reports import heatmap_grid, write_report
from tests.reports.conftest import assert_real_png

SINGLE_PLOTS = ("history", "importances", "heatmap", "parallel", "intermediate")


class _Tables(HTMLParser):
    """Rows of every <table id=...> in a page, as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = defaultdict(list)
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id")
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(path) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tables


@pytest.fixture(scope="module")
def curves_report(studies, tmp_path_factory):
    out = tmp_path_factory.mktemp("curves-report")
    index = write_report(studies["curves"].handle(), out, heatmap="batch_size,dropout", top=5)
    return index


def test_a_report_writes_html_markdown_and_every_figure_as_a_real_png(curves_report):
    out = curves_report.parent
    assert curves_report == out / "index.html"
    assert (out / "report.md").is_file()
    for key in SINGLE_PLOTS:
        assert_real_png(out / f"{key}.png")
    assert not (out / "pareto.png").exists()  # single-objective: no front
    page = curves_report.read_text(encoding="utf-8")
    for key in SINGLE_PLOTS:
        assert f'<img src="{key}.png"' in page
        assert f"]({key}.png)" in (out / "report.md").read_text(encoding="utf-8")


def test_the_heatmap_cells_are_the_mean_of_the_complete_trials_in_the_database(
        studies, curves_report):
    handle = studies["curves"].handle()
    expected = defaultdict(list)
    for t in handle.study.get_trials():
        if t.state.name == "COMPLETE":
            expected[(t.params["dropout"], t.params["batch_size"])].append(t.value)
    grid = heatmap_grid(handle, "batch_size", "dropout")
    assert grid.shape == (3, 3)
    assert grid.x.labels == ("4", "16", "32") and grid.y.labels == ("0", "0.3", "0.6")
    for i, dropout in enumerate((0.0, 0.3, 0.6)):
        for j, batch in enumerate((4, 16, 32)):
            values = expected.get((dropout, batch), [])
            assert grid.counts[i, j] == len(values)
            if values:
                assert grid.means[i, j] == pytest.approx(np.mean(values))
            else:
                assert math.isnan(grid.means[i, j])
    assert grid.counts.sum() == handle.state_counts()["COMPLETE"]
    # The report records the same matrix, and prints it as a table.
    doc = json.loads((curves_report.parent / "report.json").read_text())
    means = np.array([[np.nan if v is None else v for v in row] for row in doc["heatmap"]["means"]])
    np.testing.assert_allclose(means, grid.means)
    cells = tables(curves_report)["heatmap-cells"]
    assert cells[0] == ["dropout \\ batch_size", "4", "16", "32"]
    assert [r[0] for r in cells[1:]] == ["0.6", "0.3", "0"]


def test_a_continuous_heatmap_parameter_is_binned_over_its_search_range(studies):
    handle = studies["beale"].handle()
    grid = heatmap_grid(handle, "x", "y", bins=4)
    assert grid.shape == (4, 4) and grid.x.binned and grid.y.binned
    assert grid.x.edges[0] == -4.5 and grid.x.edges[-1] == 4.5
    done = handle.trials(["COMPLETE"])
    assert grid.counts.sum() == len(done)
    cell = [t.value for t in done
            if -4.5 <= t.params["x"] < -2.25 and -4.5 <= t.params["y"] < -2.25]
    if cell:
        assert grid.means[0, 0] == pytest.approx(np.mean(cell))


def test_the_top_table_in_the_html_matches_the_best_trials_in_the_database(studies, curves_report):
    handle = studies["curves"].handle()
    done = [t for t in handle.study.get_trials() if t.state.name == "COMPLETE"]
    best = sorted(done, key=lambda t: (t.value, t.number))[:5]
    rows = tables(curves_report)["top-trials"]
    assert rows[0][:3] == ["rank", "trial", "value (minimize)"]
    assert [int(r[1]) for r in rows[1:]] == [t.number for t in best]
    for row, trial in zip(rows[1:], best, strict=True):
        assert float(row[2]) == pytest.approx(trial.value, rel=1e-5)
        assert int(row[3]) == trial.params["batch_size"]
    best_row = tables(curves_report)["best"][1]
    assert int(best_row[0]) == best[0].number
    counts = tables(curves_report)["state-counts"]
    assert dict(zip(counts[0], map(int, counts[1]), strict=True)) == handle.state_counts()
    assert counts[1][1] != "0", "the study should hold pruned trials"


def test_the_report_shows_the_stored_spec(curves_report):
    page = curves_report.read_text(encoding="utf-8")
    assert 'id="spec"' in page and "tests.reports.objectives:curve" in page
    assert "name: threshold" in (curves_report.parent / "report.md").read_text(encoding="utf-8")


def test_pruned_learning_curves_are_drawn_in_red_beside_blue_complete_ones(curves_report):
    image = assert_real_png(curves_report.parent / "intermediate.png")[..., :3]

    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    red = int(((r - b > 0.3) & (r - g > 0.3)).sum())
    blue = int(((b - r > 0.2) & (b - g > 0.05)).sum())
    # Far more than the legend's two short samples: the curves themselves.
    assert red > 300, red  # the 3 pruned curves (tab:red, dashed)
    assert blue > 2000, blue  # the 15 complete ones (tab:blue)


def test_a_multi_objective_report_has_a_pareto_front(studies, tmp_path):
    handle = studies["multi"].handle()
    index = write_report(handle, tmp_path / "multi")
    assert_real_png(tmp_path / "multi" / "pareto.png")
    assert_real_png(tmp_path / "multi" / "history.png")
    rows = tables(index)["best"]
    front = sorted(t.number for t in handle.study.best_trials)
    assert sorted(int(r[0]) for r in rows[1:]) == front
    assert "Pareto front" in index.read_text(encoding="utf-8")


def test_importances_are_skipped_with_a_note_when_there_is_one_parameter(sqlite_url, tmp_path):
    import studyhall

    spec = {"name": "one", "objective": "tests.objectives.helpers:fails_on_odd",
            "space": {"a": {"low": 0.0, "high": 1.0}}, "n_trials": 4, "seed": 2}
    handle = studyhall.run_study(spec, storage=sqlite_url)
    index = write_report(handle, tmp_path / "one")
    assert not (tmp_path / "one" / "importances.png").exists()
    assert not (tmp_path / "one" / "heatmap.png").exists()
    page = index.read_text(encoding="utf-8")
    assert "skipped: needs at least 2 parameters; have 1" in page
    assert "skipped: needs two parameters" in page
    assert_real_png(tmp_path / "one" / "history.png")


def test_the_same_study_gives_the_same_png_bytes(studies, tmp_path):
    handle = studies["beale"].handle()
    first = write_report(handle, tmp_path / "a", heatmap="x,y").parent
    second = write_report(handle, tmp_path / "b", heatmap="x,y").parent
    for key in ("history", "importances", "heatmap", "parallel"):
        assert (first / f"{key}.png").read_bytes() == (second / f"{key}.png").read_bytes(), key


def test_a_heatmap_parameter_the_study_lacks_is_a_spec_error(studies, tmp_path):
    message = "'batch' is not a parameter of study beale; its parameters: x, y"
    with pytest.raises(SpecError, match=message):
        write_report(studies["beale"].handle(), tmp_path / "r", heatmap="batch,y")
    assert not (tmp_path / "r").exists()


def test_the_report_command_writes_to_report_dash_study_by_default(studies, tmp_path, capsys):
    study = studies["beale"]
    assert main(["report", study.name, "--storage", study.url, "--top", "3"]) == 0
    out = tmp_path / f"report-{study.name}"  # the tests run in tmp_path
    assert f"written to {out.name}/index.html" in capsys.readouterr().out
    assert len(tables(out / "index.html")["top-trials"]) == 1 + 3
    assert_real_png(out / "heatmap.png")


@pytest.mark.parametrize("args,message", [
    (["--heatmap", "x"], "`heatmap` must name two parameters as PARAM_A,PARAM_B; got 'x'"),
    (["--heatmap", "x,nope"], "'nope' is not a parameter of study beale"),
    (["--heatmap", "x,x"], "two different parameters"),
])
def test_report_with_a_bad_heatmap_exits_2_with_one_line(studies, args, message, capsys):
    study = studies["beale"]
    assert main(["report", study.name, "--storage", study.url, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("studyhall: error: ") and message in err and "\n" not in err


def test_report_on_an_unknown_study_exits_2(studies, capsys):
    assert main(["report", "beal", "--storage", studies["beale"].url]) == 2
    assert "no study named 'beal'" in capsys.readouterr().err


def _plain_study(name: str):
    import optuna

    from studyhall import StudyHandle
    from studyhall.storage import parse_url

    url = parse_url("sqlite:///:memory:")
    return StudyHandle(optuna.create_study(study_name=name), url)


def test_every_value_of_a_small_stepped_range_gets_a_cell_seen_or_not():
    import optuna
    import optuna.distributions as d

    handle = _plain_study("plain")
    space = {"units": d.IntDistribution(1, 4), "act": d.CategoricalDistribution(["relu", "tanh"])}
    for units, act, value in [(1, "relu", 1.0), (1, "relu", 3.0), (3, "tanh", 5.0)]:
        handle.study.add_trial(optuna.trial.create_trial(
            params={"units": units, "act": act}, distributions=space, value=value))
    grid = heatmap_grid(handle, "units", "act")
    assert grid.x.labels == ("1", "2", "3", "4") and grid.y.labels == ("relu", "tanh")
    assert grid.counts.tolist() == [[2, 0, 0, 0], [0, 0, 1, 0]]
    assert grid.means[0, 0] == 2.0 and grid.means[1, 2] == 5.0
    assert np.isnan(grid.means[0, 1])


def test_a_study_without_trials_gets_a_report_of_notes_and_no_figures(tmp_path):
    handle = _plain_study("empty")
    index = write_report(handle, tmp_path / "empty")
    files = sorted(p.name for p in index.parent.iterdir())
    assert files == ["index.html", "report.json", "report.md"]
    page = index.read_text(encoding="utf-8")
    assert "skipped: no complete trial yet" in page
    assert "this study was not created by studyhall" in page


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # JAX, loaded by other tests
@pytest.mark.parametrize("key", ["curves", "multi"])
def test_ranking_in_a_child_process_writes_the_report_an_in_process_ranking_writes(
        studies, tmp_path, monkeypatch, key):
    from studyhall.reports import _background

    monkeypatch.setattr(_background, "_can_fork", lambda: True)
    forked = write_report(studies[key].handle(), tmp_path / "forked").parent
    monkeypatch.setattr(_background, "_can_fork", lambda: False)
    here = write_report(studies[key].handle(), tmp_path / "here").parent
    names = sorted(p.name for p in here.iterdir())
    assert names == sorted(p.name for p in forked.iterdir()) and "importances.png" in names
    for name in names:
        assert (forked / name).read_bytes() == (here / name).read_bytes(), name


def test_a_report_on_a_sql_storage_builds_no_orm_trials(studies, tmp_path, monkeypatch):
    import optuna

    def refuse(*_args):
        raise AssertionError("the report loaded trials through Optuna's ORM")

    monkeypatch.setattr(optuna.storages.RDBStorage, "_build_frozen_trial_from_trial_model",
                        refuse)
    for key in ("curves", "multi"):
        index = write_report(studies[key].handle(), tmp_path / key)
        assert "importances.png" in index.read_text(encoding="utf-8")


def test_importances_are_skipped_with_a_note_when_no_parameter_is_in_every_trial(tmp_path):
    import optuna

    handle = _plain_study("conditional")
    for i in range(4):
        name = "a" if i % 2 else "b"
        handle.study.add_trial(optuna.trial.create_trial(
            params={name: i / 4, "c": i}, value=float(i), distributions={
                name: optuna.distributions.FloatDistribution(0, 1),
                "c": optuna.distributions.CategoricalDistribution([0, 1, 2, 3])}))
    handle.study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=9.0))
    index = write_report(handle, tmp_path / "conditional")
    assert "skipped: no parameter is in every complete trial" in index.read_text(encoding="utf-8")
    assert not (tmp_path / "conditional" / "importances.png").exists()
