from __future__ import annotations

import pytest

from studyhall import SpecError, list_presets, load_spec
from studyhall.studies.spec import StudySpec

BEALE = {
    "name": "b",
    "objective": "beale",
    "space": {"x": {"low": -4.5, "high": 4.5}, "y": {"low": -4.5, "high": 4.5}},
    "n_trials": 10,
}


def with_(**changes):
    spec = {**BEALE, **changes}
    return {k: v for k, v in spec.items() if v is not ...}


def test_a_minimal_dict_gets_defaults_from_the_objective():
    spec = load_spec(BEALE)
    assert spec.sampler.name == "tpe"
    assert spec.pruner.name == "none"
    assert spec.directions == ("minimize",)
    assert [p.name for p in spec.space] == ["x", "y"]
    assert spec.space[0].type == "float"


def test_breast_cancer_direction_follows_its_metric():
    space = {"units": [1, 32]}
    acc = load_spec({"name": "a", "objective": "breast_cancer", "space": space, "n_trials": 1})
    loss = load_spec({"name": "l", "objective": {"name": "breast_cancer", "metric": "val_loss"},
                      "space": space, "n_trials": 1})
    assert acc.directions == ("maximize",)
    assert loss.directions == ("minimize",)


def test_spec_is_frozen():
    spec = load_spec(BEALE)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_to_dict_round_trips():
    spec = load_spec("breast-cancer-tpe")
    again = load_spec(spec.to_dict())
    assert again == spec
    assert isinstance(again, StudySpec)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_validates(name):
    spec = load_spec(name)
    assert spec.name == name
    assert spec.budget is not None and spec.budget > 0
    assert spec.description


def test_the_seed_grid_preset_has_216_configurations():
    spec = load_spec("breast-cancer-grid")
    assert spec.budget == 216
    assert spec.grid == {
        "units": (1, 32, 64),
        "activation": ("linear", "relu"),
        "dropout": (0.0, 0.3, 0.6),
        "batch_size": (4, 16, 32),
        "learning_rate": (0.01, 0.1, 0.5, 1.0),
    }
    assert spec.objective.options["optimizer"] == "sgd"


def test_grid_budget_is_capped_at_the_grid_size():
    spec = load_spec(with_(space={"x": [1.0, 2.0], "y": {"low": -1, "high": 1}}))
    assert spec.space[1].type == "float"  # beale's y is a float even with integer bounds
    spec = load_spec(with_(sampler="grid", n_trials=1000,
                           space={"x": [1.0, 2.0], "y": {"low": -1.0, "high": 1.0, "step": 0.5}}))
    assert spec.budget == 2 * 5


def test_a_yaml_file_gets_its_name_from_the_file(tmp_path):
    path = tmp_path / "my-study.yaml"
    path.write_text("objective: beale\nn_trials: 5\n"
                    "space:\n  x: {low: -1.0, high: 1.0}\n  y: [0.5]\n")
    spec = load_spec(path)
    assert spec.name == "my-study"
    assert spec.space[1].choices == (0.5,)


def test_overrides_replace_spec_keys_and_are_validated():
    spec = load_spec(BEALE, overrides={"n_trials": 33, "seed": 7, "timeout": None})
    assert (spec.n_trials, spec.seed) == (33, 7)
    with pytest.raises(SpecError, match=r"`n_trials` in the command line must be a positive "
                                        r"integer; got -1"):
        load_spec(BEALE, overrides={"n_trials": -1}, overrides_from="the command line")


def test_objective_options_may_be_nested_under_options():
    spec = load_spec({**BEALE, "objective": {"name": "breast_cancer", "options": {"epochs": 3}},
                      "space": {"units": [1, 2]}})
    assert spec.objective.options == {"epochs": 3}


# Each malformed spec: (changes to the Beale spec, text the one-line message must contain).
BAD = [
    ({"sampler": "tpee"}, "`sampler` in test.yaml must be one of grid, random, tpe"),
    ({"sampler": "tpee"}, "did you mean 'tpe'"),
    ({"pruner": "medain"}, "`pruner` in test.yaml must be one of none, median"),
    ({"space": {"x": {"low": 2.0, "high": 1.0}, "y": [1.0]}},
     "`space.x` in test.yaml has low > high (2.0 > 1.0)"),
    ({"space": {"x": [], "y": [1.0]}}, "`space.x.choices` in test.yaml must be a non-empty list"),
    ({"sampler": "grid"}, "`space.x` in test.yaml cannot be gridded"),
    ({"objective": "bael"}, "`objective` in test.yaml must be one of beale, breast_cancer"),
    ({"samplr": "tpe"},
     "unknown key 'samplr' in `spec` of test.yaml (did you mean 'sampler'?)"),
    ({"n_trials": "ten"}, "`n_trials` in test.yaml must be a positive integer; got 'ten'"),
    ({"n_trials": -5}, "`n_trials` in test.yaml must be a positive integer; got -5"),
    ({"n_trials": True}, "`n_trials` in test.yaml must be a positive integer; got True"),
    ({"timeout": 0}, "`timeout` in test.yaml must be a positive number of seconds"),
    ({"seed": -1}, "`seed` in test.yaml must be an integer in [0, 4294967295]"),
    ({"storage": "mongodb://localhost/x"},
     "storage URL scheme 'mongodb' from `storage` in test.yaml is not supported"),
    ({"storage": "sqlite:////no/such/dir/x.db"}, "directory that does not exist"),
    ({"direction": "minimise"},
     "`direction` in test.yaml must be one of minimize, maximize; got 'minimise'"),
    ({"direction": "maximize"}, "`direction` in test.yaml is ['maximize'] but objective beale"),
    ({"space": {"z": [1.0], "y": [1.0]}}, "unknown parameter of objective beale 'z' in `space`"),
    ({"space": {"x": {"low": -1.0, "high": 1.0, "log": True}, "y": [1.0]}},
     "`space.x.low` in test.yaml must be > 0 on a log scale"),
    ({"space": {"x": {"low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "y": [1.0]}},
     "cannot have both `log` and `step`"),
    ({"space": {"x": {"low": -9.0, "high": 1.0}, "y": [1.0]}},
     "`space.x.low` in test.yaml must be >= -4.5 for x; got -9.0"),
    ({"space": {"x": {"low": -1.0, "high": 1.0, "grid": [0.0, 5.0]}, "y": [1.0]}},
     "`space.x.grid` in test.yaml values [5.0] lie outside [low, high]"),
    ({"space": {"x": {"lo": -1.0, "high": 1.0}, "y": [1.0]}},
     "unknown key 'lo' in `space.x` of test.yaml (did you mean 'low'?)"),
    ({"space": {"x": 1.5, "y": [1.0]}},
     "`space.x` in test.yaml must be a list of choices or a mapping"),
    ({"space": {"x": {"type": "double", "low": 0.0, "high": 1.0}, "y": [1.0]}},
     "`space.x.type` in test.yaml must be one of float, int, categorical"),
    ({"space": {}}, "`space` in test.yaml must be a non-empty mapping"),
    ({"sampler": {"name": "tpe", "n_startup": 3}},
     "unknown option of sampler tpe 'n_startup' in `sampler`"),
    ({"sampler": {"name": "tpe", "seed": 3}},
     "`sampler.seed` in test.yaml is not an option; set the top-level `seed`"),
    ({"pruner": {"name": "percentile"}},
     "`pruner` in test.yaml options are rejected by Optuna's percentile pruner"),
    ({"pruner": {"name": "median", "n_warmup_steps": -1}}, "rejected by Optuna's median pruner"),
    ({"n_trials": ...}, "`n_trials` in test.yaml is missing: set `n_trials` or `timeout`"),
    ({"name": "bad name!"}, "`name` in test.yaml must be 1-128 letters"),
    ({"direction": "minimize", "directions": ["minimize"]},
     "`direction` in test.yaml and `directions` are both given"),
    ({"objective": {"name": "beale", "epochs": 3}},
     "unknown option 'epochs' in `objective` of test.yaml"),
    ({"objective": "no_such_module_xyz:f"},
     "`objective` in test.yaml names 'no_such_module_xyz:f', which cannot be imported"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m[:40] for _, m in BAD])
def test_a_malformed_spec_names_the_key_what_is_allowed_and_the_source(changes, message):
    with pytest.raises(SpecError) as info:
        load_spec(with_(**changes), source="test.yaml")
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_a_spec_error_is_also_a_value_error():
    with pytest.raises(ValueError):
        load_spec(with_(sampler="nope"))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("objective: beale\nspace: {x: [1, 2\n")
    with pytest.raises(SpecError, match=r"broken.yaml is not valid YAML at line 3"):
        load_spec(path)


def test_a_missing_file_or_preset_suggests_the_nearest_preset():
    with pytest.raises(SpecError, match=r"did you mean preset 'beale-tpe'"):
        load_spec("beale-tp")


def test_a_fixed_option_cannot_also_be_searched():
    with pytest.raises(SpecError, match=r"`space.units` in a spec dict is also fixed"):
        load_spec({"name": "x", "objective": {"name": "breast_cancer", "units": 3},
                   "space": {"units": [1, 2]}, "n_trials": 2})


def test_multi_objective_studies_cannot_be_pruned():
    with pytest.raises(SpecError,
                       match=r"`pruner` in a spec dict must be none for a multi-objective"):
        load_spec({"name": "x",
                   "objective": "no_such:thing" if False else "tests.objectives.helpers:two_values",
                   "space": {"a": [1, 2]}, "directions": ["minimize", "maximize"],
                   "pruner": "median", "n_trials": 2})
