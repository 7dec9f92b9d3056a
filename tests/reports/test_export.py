from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys

import pytest

import studyhall
from studyhall.cli import main
from studyhall.reports import delete_study, export_trials


def test_export_json_round_trips_every_trial_with_its_curve(studies, tmp_path, capsys):
    study = studies["curves"]
    out = tmp_path / "trials.json"
    args = ["export", study.name, "--format", "json", "--storage", study.url, "--out", str(out)]
    assert main(args) == 0
    assert f"exported 18 trials of {study.name} to {out}" in capsys.readouterr().err
    doc = json.loads(out.read_text())
    trials = study.handle().study.get_trials()
    assert doc["study"] == study.name and doc["directions"] == ["minimize"]
    assert doc["n_trials"] == len(doc["trials"]) == len(trials) == 18
    assert doc["spec"]["sampler"]["name"] == "grid"
    for record, trial in zip(doc["trials"], trials, strict=True):
        assert record["number"] == trial.number
        assert record["state"] == trial.state.name
        assert record["values"] == trial.values
        assert record["params"] == trial.params
        assert record["user_attrs"]["seed"] == trial.user_attrs["seed"]
        assert record["datetime_start"] == trial.datetime_start.isoformat()
        assert record["duration_s"] == pytest.approx(trial.duration.total_seconds())
        curve = {int(k): v for k, v in record["intermediate_values"].items()}
        assert curve == trial.intermediate_values
    pruned = [r for r in doc["trials"] if r["state"] == "PRUNED"]
    assert pruned and all(len(r["intermediate_values"]) == 3 for r in pruned)


def test_export_csv_to_stdout_has_one_row_per_trial_and_the_values(studies, capsys):
    study = studies["beale"]
    assert main(["export", study.name, "--format", "csv", "--storage", study.url]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    trials = study.handle().study.get_trials()
    assert len(rows) == len(trials) == 25
    assert list(rows[0])[:3] == ["number", "state", "value"]
    for row, trial in zip(rows, trials, strict=True):
        assert int(row["number"]) == trial.number
        assert float(row["value"]) == trial.value  # repr round-trips floats exactly
        assert float(row["params_x"]) == trial.params["x"]
        assert int(row["user_attrs_seed"]) == trial.user_attrs["seed"]


def test_export_csv_of_a_multi_objective_study_has_a_column_per_objective(studies):
    buffer = io.StringIO()
    assert export_trials(studies["multi"].handle(), "csv", buffer) == 16
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert {"values_0", "values_1", "params_a", "params_b"} <= set(rows[0])
    for row in rows:
        assert float(row["values_1"]) == pytest.approx(float(row["values_0"]) ** 2)


def test_json_export_spells_nan_as_a_string_so_strict_parsers_read_it(sqlite_url):
    spec = {"name": "nan", "objective": "tests.objectives.helpers:returns_nan",
            "space": {"a": [1, 2]}, "n_trials": 2, "seed": 1}
    handle = studyhall.run_study(spec, storage=sqlite_url)
    trial = handle.study.ask()
    trial.report(math.nan, 0)
    handle.study.tell(trial, 1.0)
    buffer = io.StringIO()
    export_trials(handle, "json", buffer)
    doc = json.loads(buffer.getvalue(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert doc["trials"][-1]["intermediate_values"] == {"0": "NaN"}


def test_export_of_an_unknown_study_exits_2(studies, capsys):
    assert main(["export", "nope", "--format", "csv", "--storage", studies["beale"].url]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err


def _small_study(url: str, name: str = "doomed") -> None:
    studyhall.run_study({"name": name, "objective": "beale", "n_trials": 3, "seed": 1,
                         "space": {"x": {"low": -1.0, "high": 1.0}, "y": [0.5]}}, storage=url)


def names(url: str) -> list[str]:
    return [s.name for s in studyhall.list_studies(url)]


def test_delete_with_yes_removes_the_study_and_keeps_the_others(sqlite_url, capsys):
    _small_study(sqlite_url)
    _small_study(sqlite_url, "kept")
    assert main(["delete", "doomed", "--storage", sqlite_url, "--yes"]) == 0
    assert "deleted study doomed (3 trials)" in capsys.readouterr().out
    assert names(sqlite_url) == ["kept"]


def test_delete_without_yes_and_without_a_terminal_refuses_with_exit_2(sqlite_url, tmp_path):
    _small_study(sqlite_url)
    command = [sys.executable, "-m", "studyhall", "delete", "doomed", "--storage", sqlite_url]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("studyhall: error: refusing to delete study 'doomed' without "
                                     "confirmation (stdin is not a terminal); pass --yes.")
    assert names(sqlite_url) == ["doomed"]


@pytest.mark.parametrize("answer,code,left",
                         [("y", 0, []), ("n", 1, ["doomed"]), ("", 1, ["doomed"])])
def test_delete_on_a_terminal_asks_first(answer, code, left, sqlite_url, monkeypatch, capsys):
    _small_study(sqlite_url)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    assert main(["delete", "doomed", "--storage", sqlite_url]) == code
    assert asked == [f"delete study 'doomed' and its 3 trials from {sqlite_url}? [y/N] "]
    assert names(sqlite_url) == left


def test_delete_of_an_unknown_study_exits_2_and_deletes_nothing(sqlite_url, capsys):
    _small_study(sqlite_url)
    assert main(["delete", "doome", "--storage", sqlite_url, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "no study named 'doome'" in err and "did you mean 'doomed'" in err
    assert names(sqlite_url) == ["doomed"]


def test_delete_study_returns_the_trial_count(sqlite_url):
    _small_study(sqlite_url)
    assert delete_study("doomed", sqlite_url) == 3
    with pytest.raises(studyhall.StudyNotFoundError):
        studyhall.open_study("doomed", sqlite_url)
