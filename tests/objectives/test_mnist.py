"""The mnist objective end to end: real MNIST (a subset), SQLite, epoch reports, saved models."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from studyhall.cli import main
from studyhall.objectives import _keras
from studyhall.objectives.mnist import ARTICLE_INITIALIZERS, evaluate
from studyhall.objectives.mnist_data import mnist_split
from studyhall.reports.records import ExportError, export_model
from studyhall.studies import load_spec, open_study, run_study

SMALL = {"subset": 3000, "val_size": 1000, "epochs": 2, "units": 32}


def _spec(name: str, url: str, objective: dict, space: dict, n_trials: int) -> dict:
    return {"name": name, "objective": {"name": "mnist", **objective}, "space": space,
            "sampler": "random", "seed": 7, "n_trials": n_trials, "storage": url}


def _assert_export_scores_as_stored(handle, trial, out) -> None:
    """The best trial's exported model (500 validation / 1,000 training digits) reloads and
    scores the trial's validation value and stored test accuracy."""
    export_model(handle, out)
    model = _keras.keras().models.load_model(out / "model.keras")
    data = mnist_split(500, 42, 1000)
    assert evaluate(model, data.x_val, data.y_val)[1] == pytest.approx(trial.value, abs=1e-6)
    assert evaluate(model, data.x_test, data.y_test)[1] == pytest.approx(
        trial.user_attrs["test_accuracy"], abs=1e-6)


@pytest.fixture(scope="module")
def mlp_study(mnist_npz, tmp_path_factory):
    """Three MLP trials of 2 epochs on 3,000 digits, every model saved (save_models: all).

    Only the (constant) learning rate varies, so the three trials share one compiled epoch;
    the schedules have their own tests.
    """
    url = f"sqlite:///{tmp_path_factory.mktemp('mnist') / 'mnist.db'}"
    spec = _spec("mnist-small", url,
                 {"model": "mlp", "optimizer": "adam", "save_models": "all", **SMALL},
                 {"learning_rate": {"low": 0.001, "high": 0.005, "log": True}}, 3)
    return run_study(spec), url


def test_a_short_mnist_study_reports_every_epoch_and_keeps_test_accuracy(mlp_study):
    handle, url = mlp_study
    assert url.startswith("sqlite:///")
    assert handle.state_counts()["COMPLETE"] == 3
    for trial in handle.trials():
        curve = trial.intermediate_values
        assert sorted(curve) == [0, 1]  # one report per epoch
        assert trial.value == max(curve.values())
        assert trial.user_attrs["best_epoch"] == max(curve, key=curve.get)
        assert trial.user_attrs["epochs_trained"] == 2
        assert 0.8 < trial.user_attrs["test_accuracy"] <= 1.0
        assert trial.user_attrs["n_params"] == 784 * 32 + 32 + 32 * 10 + 10
    assert handle.best_trial.value > 0.85


def test_an_exported_model_reloads_and_predicts_with_the_same_accuracy(mlp_study, tmp_path, capsys):
    handle, url = mlp_study
    keras = _keras.keras()
    data = mnist_split(1000, 42, 3000)
    for trial in handle.trials():  # save_models: all -> every completed trial has its model
        out = tmp_path / f"trial-{trial.number}"
        assert main(["export", handle.name, "--storage", url, "--trial", str(trial.number),
                     "--out", str(out)]) == 0
        model = keras.models.load_model(out / "model.keras")
        _, accuracy = evaluate(model, data.x_test, data.y_test)
        assert accuracy == pytest.approx(trial.user_attrs["test_accuracy"], abs=1e-6)
        _, val_accuracy = evaluate(model, data.x_val, data.y_val)
        assert val_accuracy == pytest.approx(trial.value, abs=1.5e-3)  # the best epoch's weights
        params = json.loads((out / "params.json").read_text())
        assert params["searched"] == trial.params and params["fixed"]["model"] == "mlp"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["user_attrs"]["test_accuracy"] == trial.user_attrs["test_accuracy"]
        assert set(metrics["intermediate_values"]) == {"0", "1"}
        assert json.loads((out / "model.json").read_text())["class_name"] == "Sequential"
    err = capsys.readouterr().err
    assert "exported the model of trial 2 of mnist-small" in err


def test_the_default_model_export_is_the_best_trial(mlp_study, tmp_path):
    handle, url = mlp_study
    number, path = export_model(handle, tmp_path / "best")
    assert number == handle.best_trial.number and path.name == "model.keras"
    assert main(["export", handle.name, "--storage", url, "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "model.keras").read_bytes() == path.read_bytes()
    with pytest.raises(ExportError, match=r"--trial 9 is not a trial of study 'mnist-small' "
                                          r"\(it holds trials 0-2\)"):
        export_model(handle, tmp_path / "nine", trial=9)
    assert not (tmp_path / "nine").exists()


def test_the_csv_and_json_exports_still_work(mlp_study, capsys):
    handle, url = mlp_study
    assert main(["export", handle.name, "--storage", url, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_trials"] == 3 and "model_artifact" in doc["trials"][0]["user_attrs"]
    assert main(["export", handle.name, "--storage", url, "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 4


@pytest.mark.parametrize("args, message", [
    (["--trial", "0", "--format", "csv"], "cannot be combined with --format csv"),
    (["--trial", "0"], "a model export needs --out DIR"),
    ([], "export needs --format csv|json (every trial, to stdout) or --out DIR [--trial N]"),
])
def test_bad_export_requests_are_one_line_and_exit_2(mlp_study, args, message, capsys):
    handle, url = mlp_study
    assert main(["export", handle.name, "--storage", url, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_save_models_best_keeps_only_the_models_that_led_the_study(mnist_npz, sqlite_url, capsys):
    # Learning rates in falling order of quality: 0.002 then 1e-5: the second trial is worse.
    spec = _spec("mnist-best-only", sqlite_url, {"model": "mlp", "optimizer": "adam", **SMALL,
                                                 "epochs": 1},
                 {"learning_rate": [0.002, 0.00001]}, 2)
    spec["sampler"] = "grid"
    handle = run_study(spec)
    trials = {t.params["learning_rate"]: t for t in handle.trials()}
    assert "model_artifact" in trials[0.002].user_attrs
    assert "model_artifact" not in trials[0.00001].user_attrs
    assert handle.url.path and (handle.url.path + ".artifacts")
    worse = trials[0.00001].number
    assert main(["export", handle.name, "--storage", sqlite_url, "--trial", str(worse),
                 "--out", "x"]) == 2
    assert "has no saved model" in capsys.readouterr().err


def test_a_cnn_trial_trains_saves_and_reloads_its_custom_layers(mnist_npz, sqlite_url, tmp_path):
    spec = _spec("mnist-cnn", sqlite_url,
                 {"model": "cnn", "filters": 4, "units": 16, "subset": 1000, "val_size": 500,
                  "epochs": 1, "batch_size": 25, "learning_rate": 0.003},
                 {"kernel_initializer": ["he_normal"]}, 1)
    handle = run_study(spec)
    trial = handle.best_trial
    assert trial.value > 0.3 and sorted(trial.intermediate_values) == [0]
    export_model(handle, tmp_path / "cnn")
    model = _keras.keras().models.load_model(tmp_path / "cnn" / "model.keras")
    assert [type(layer).__name__ for layer in model.layers][:4] == [
        "Conv3x3", "MaxPool2x2", "Conv3x3", "MaxPool2x2"]
    data = mnist_split(500, 42, 1000)
    assert evaluate(model, data.x_test, data.y_test)[1] == pytest.approx(
        trial.user_attrs["test_accuracy"], abs=1e-6)


def test_a_hill_climbed_mlp_beats_chance_and_its_saved_model_holds_the_climbed_weights(
        mnist_npz, sqlite_url, tmp_path):
    spec = _spec("mnist-climb", sqlite_url,
                 {"model": "mlp", "units": 16, "subset": 1000, "val_size": 500, "epochs": 2,
                  "trainer": "hill_climb", "iterations": 300},
                 {"step_size": [0.02]}, 1)
    spec["sampler"] = "grid"
    handle = run_study(spec)
    trial = handle.best_trial
    assert sorted(trial.intermediate_values) == [0, 1]  # one report per checkpoint
    assert trial.value > 0.2  # 10 classes: chance is 0.1
    _assert_export_scores_as_stored(handle, trial, tmp_path / "climb")


def test_a_gradient_free_cnn_is_refused_before_anything_runs(mnist_npz, sqlite_url):
    from studyhall import SpecError

    spec = _spec("mnist-cnn-climb", sqlite_url, {"model": "cnn", "trainer": "hill_climb"},
                 {"step_size": [0.02]}, 1)
    with pytest.raises(SpecError) as err:
        load_spec(spec, source="studies/m.yaml")
    assert str(err.value) == (
        "`objective` in studies/m.yaml: trainer 'hill_climb' needs model: mlp (gradient-free "
        "trainers search dense weights; the cnn trains by backprop only).")
    del spec["objective"]["trainer"]
    spec["space"] = {"trainer": ["differential_evolution"]}  # known only at trial time
    handle = run_study(spec)  # each trial fails (the study goes on) until 10 in a row stop it
    trials = handle.trials()
    assert len(trials) == 10 and {t.state.name for t in trials} == {"FAIL"}
    assert trials[0].user_attrs["fail_reason"].startswith(
        "ValueError: trainer 'differential_evolution' needs model: mlp")


def test_the_im2col_layers_compute_what_conv2d_and_maxpooling2d_compute():
    keras = _keras.keras()
    from studyhall.objectives._conv import Conv3x3, MaxPool2x2

    x = np.random.default_rng(0).normal(size=(2, 9, 7, 3)).astype(np.float32)
    ours, theirs = Conv3x3(5, activation="relu"), keras.layers.Conv2D(5, 3, activation="relu")
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(MaxPool2x2()(x)),
                               np.asarray(keras.layers.MaxPooling2D(2)(x)), rtol=0, atol=0)


def test_a_missing_data_set_names_the_fetch_command_before_a_study_is_written(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STUDYHALL_DATA", str(tmp_path / "nothing-here"))
    spec = tmp_path / "m.yaml"
    spec.write_text("objective: {name: mnist, model: mlp, epochs: 1}\nn_trials: 1\n"
                    "space:\n  learning_rate: [0.001]\n")
    db = tmp_path / "m.db"
    assert main(["run", str(spec), "--storage", f"sqlite:///{db}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # no failed trial's traceback before it
    assert "MNIST is not cached at" in err[0] and "run `studyhall data fetch mnist`" in err[0]
    assert not db.exists()  # no study holding a failed trial
    # A worker joining a study made while the data was there checks before its first trial.
    from studyhall.storage import open_storage, parse_url
    from studyhall.studies.runner import _prepare

    url = parse_url(f"sqlite:///{db}")
    _prepare(load_spec(str(spec)), open_storage(url), url)
    assert main(["worker", "m", "--storage", f"sqlite:///{db}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MNIST is not cached at" in err[0], err
    assert open_study("m", f"sqlite:///{db}").trials() == []


def test_the_mnist_presets_load_and_validate():
    tpe = load_spec("mnist-tpe")
    assert (tpe.sampler.name, tpe.pruner.name) == ("tpe", "hyperband")
    assert {"schedule", "momentum", "nesterov", "optimizer", "batch_size", "epochs",
            "kernel_initializer", "learning_rate"} <= {p.name for p in tpe.space}
    assert tpe.objective.options["patience"] > 0
    grid = load_spec("mnist-init-grid")
    assert grid.sampler.name == "grid" and grid.budget == len(ARTICLE_INITIALIZERS) == 8
    (init,) = grid.space
    assert init.name == "kernel_initializer" and tuple(init.choices) == ARTICLE_INITIALIZERS


def test_early_stopping_ends_a_fit_after_patience_epochs_without_progress():
    trial = optuna.trial.FixedTrial({})
    reporter = _keras._Reporter(trial, "val_accuracy", maximize=True, patience=2)
    logs = lambda v: {"loss": 0.1, "val_loss": 0.2, "val_accuracy": v}  # noqa: E731
    assert reporter(0, logs(0.5)) is True
    assert reporter(1, logs(0.6)) is True
    assert reporter(2, logs(0.55)) is False
    with pytest.raises(_keras._EarlyStop) as stop:
        reporter(3, logs(0.6))  # equal is not better
    assert stop.value.epoch == 3


@pytest.mark.slow  # model.fit compiles its own step functions: ~30 s more
def test_the_fit_loop_also_ends_with_the_best_epoch_and_saves_it(mnist_npz, sqlite_url,
                                                                  monkeypatch, tmp_path):
    """``model.fit`` (TensorFlow, or STUDYHALL_TRAINING_LOOP=fit) restores and saves alike."""
    monkeypatch.setenv("STUDYHALL_TRAINING_LOOP", "fit")
    spec = _spec("mnist-fit", sqlite_url,
                 {"model": "mlp", "units": 16, "subset": 1000, "val_size": 500, "epochs": 3,
                  "optimizer": "sgd", "learning_rate": 2.0, "batch_size": 50},
                 {"kernel_initializer": ["glorot_uniform"]}, 1)
    handle = run_study(spec)
    trial = handle.best_trial
    curve = trial.intermediate_values
    assert trial.user_attrs["best_epoch"] == max(curve, key=curve.get)
    _assert_export_scores_as_stored(handle, trial, tmp_path / "fit")


@pytest.mark.parametrize("loss", ["sparse_categorical_logits", "sparse_categorical_mse",
                                  "sparse_categorical_hinge"])
def test_the_compiled_loop_and_fit_compute_each_loss_as_keras_defines_it(loss):
    from studyhall.objectives._loop import _losses

    keras = _keras.keras()
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (64, 10)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    one_hot = np.eye(10, dtype=np.float32)[y]
    expected = {
        "sparse_categorical_logits": keras.losses.sparse_categorical_crossentropy(
            y, z, from_logits=True),
        "sparse_categorical_mse": keras.losses.mean_squared_error(
            one_hot, keras.ops.softmax(z, axis=-1)),
        "sparse_categorical_hinge": keras.losses.categorical_hinge(one_hot, z),
    }[loss]
    per_example, correct = _losses(loss)
    np.testing.assert_allclose(np.asarray(per_example(y, z)), np.asarray(expected), rtol=1e-5,
                               atol=1e-6)
    fit_loss, _ = _keras._keras_loss_and_metric(loss)
    fit_value = np.mean(np.asarray(fit_loss(y, z)))  # compile() averages a per-example loss
    assert fit_value == pytest.approx(float(np.mean(expected)), rel=1e-5)
    assert np.asarray(correct(y, z)).mean() == np.mean(z.argmax(axis=1) == y)


def test_mse_and_hinge_losses_train_an_mlp(mnist_npz, sqlite_url):
    spec = _spec("mnist-losses", sqlite_url,
                 {"model": "mlp", "optimizer": "adam", **SMALL, "epochs": 1},
                 {"loss": ["mse", "hinge"]}, 2)
    spec["sampler"] = "grid"
    handle = run_study(spec)
    for trial in handle.trials():
        assert trial.state.name == "COMPLETE" and trial.value > 0.4, trial.params  # chance: 0.1
        assert trial.user_attrs["test_accuracy"] > 0.4
