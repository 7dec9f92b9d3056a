from __future__ import annotations

import pytest

from studyhall import Hyperparameter, SpecError, load_spec, register_objective
from studyhall.objectives import get_objective, objective_names
from studyhall.objectives.beale import beale


def test_beale_is_zero_at_its_minimum_and_positive_elsewhere():
    assert beale(None, {"x": 3.0, "y": 0.5}) == 0.0
    assert beale(None, {"x": 0.0, "y": 0.0}) == pytest.approx(14.203125)


def test_builtins_are_registered():
    assert {"beale", "breast_cancer", "mnist", "synthetic"} <= set(objective_names())


def test_a_builtin_is_looked_up_without_importing_the_others():
    import subprocess
    import sys

    code = (
        "import sys; from studyhall.objectives import get_objective, objective_names; "
        "get_objective('breast_cancer'); print('MNIST', 'studyhall.objectives.mnist' in "
        "sys.modules); print('NAMES', *objective_names())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert "MNIST False" in out, out
    assert "NAMES beale breast_cancer mnist synthetic" in out, out


def test_a_module_function_path_resolves():
    info = get_objective("tests.objectives.helpers:two_values")
    assert info.factory()(None, {"a": 3}) == (3.0, 9.0)
    assert info.params is None


def test_an_unknown_name_is_a_key_error():
    with pytest.raises(KeyError):
        get_objective("no_such_objective")


def test_declared_params_are_checked_in_specs():
    register_objective(
        "declared_test",
        params={"lr": Hyperparameter("float", 0.1, low=0.0, low_open=True)},
        directions=lambda options: ("maximize",),
    )(lambda trial, params: params["lr"])
    spec = load_spec({"name": "d", "objective": "declared_test", "n_trials": 1,
                      "space": {"lr": {"low": 0.01, "high": 1.0, "log": True}}})
    assert spec.directions == ("maximize",)
    with pytest.raises(SpecError,
                       match=r"`space.lr.low` in a spec dict must be > 0.0 for lr; got 0.0"):
        load_spec({"name": "d", "objective": "declared_test", "n_trials": 1,
                   "space": {"lr": {"low": 0.0, "high": 1.0}}})


def test_hyperparameter_check_explains_the_problem():
    hp = Hyperparameter("str", "relu", choices=("relu", "tanh"))
    assert hp.check("relu") is None
    assert hp.check("gelu") == "must be one of relu, tanh"
    assert Hyperparameter("int", 1).check(1.5) == "must be of type int"
    assert Hyperparameter("int", 1).check(True) == "must be of type int"


def test_a_keras_objective_imports_keras_when_the_worker_starts_not_in_its_first_trial():
    import subprocess
    import sys

    code = (
        "import sys; from studyhall import load_spec; "
        "from studyhall.studies.worker import _TrialFunction; "
        "spec = load_spec('breast-cancer-tpe'); print('BEFORE', 'keras' in sys.modules); "
        "_TrialFunction(spec, on_start=lambda: None); print('AFTER', 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300).stdout
    assert "BEFORE False" in out and "AFTER True" in out, out
