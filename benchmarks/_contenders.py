"""One contender per function; each runs in a fresh process (the Keras backend is per process)
and prints one JSON line: seconds per trial and the best validation accuracy.

P1's space is the seed article's breast-cancer grid. Optuna contenders walk the same shuffled
grid (GridSampler, same seed), so they train exactly the same configurations in the same order.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from typing import Any

GRID: dict[str, list[Any]] = {
    "units": [1, 32, 64],
    "activation": ["linear", "relu"],
    "dropout": [0.0, 0.3, 0.6],
    "batch_size": [4, 16, 32],
    "learning_rate": [0.01, 0.1, 0.5, 1.0],
}
SEED = 42


def _mean(values: Any) -> float:
    """Mean validation accuracy over the trials (a diverged trial counts as 0): less noisy
    than the best of 10, which moves in steps of one validation sample (0.88 points)."""
    kept = [v if v is not None and v == v else 0.0 for v in values]
    return sum(kept) / len(kept) if kept else 0.0


def _quiet() -> None:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("studyhall").setLevel(logging.WARNING)


def _data() -> Any:
    from studyhall.objectives.datasets import breast_cancer

    return breast_cancer()


def optuna_keras_fit(trials: int, epochs: int, workdir: str) -> dict[str, Any]:
    """Plain Optuna + Keras ``fit``, written as Optuna's Keras example does it (SQLite storage)."""
    import keras
    import optuna

    _quiet()
    d = _data()

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        units = trial.suggest_categorical("units", GRID["units"])
        activation = trial.suggest_categorical("activation", GRID["activation"])
        dropout = trial.suggest_categorical("dropout", GRID["dropout"])
        batch_size = trial.suggest_categorical("batch_size", GRID["batch_size"])
        lr = trial.suggest_categorical("learning_rate", GRID["learning_rate"])
        model = keras.Sequential([
            keras.Input((d.x_train.shape[1],)),
            keras.layers.Dense(units, activation=activation),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(1),
        ])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)])
        history = model.fit(d.x_train, d.y_train, batch_size=batch_size, epochs=epochs,
                            validation_data=(d.x_val, d.y_val), verbose=0).history
        accs = [a for a in history["val_accuracy"] if a == a]
        return max(accs) if accs else 0.0

    study = optuna.create_study(
        direction="maximize", storage=f"sqlite:///{workdir}/optuna.db",
        sampler=optuna.samplers.GridSampler(GRID, seed=SEED),
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    elapsed = time.perf_counter() - start
    return {"seconds_per_trial": elapsed / trials, "best": study.best_value,
            "mean": _mean(t.value for t in study.trials), "backend": keras.backend.backend()}


def studyhall_run(trials: int, epochs: int, workdir: str) -> dict[str, Any]:
    """studyhall on its default storage and training loop, same grid, same seed, no pruning."""
    import studyhall

    _quiet()
    _data()  # loaded once per process, as a worker does; excluded like the peers' data loading
    spec = {"name": "bench",
            "objective": {"name": "breast_cancer", "epochs": epochs, "optimizer": "sgd"},
            "space": GRID, "sampler": "grid", "seed": SEED}
    start = time.perf_counter()
    handle = studyhall.run_study(spec, n_trials=trials, storage=f"sqlite:///{workdir}/studyhall.db")
    elapsed = time.perf_counter() - start
    values = [t.value for t in handle.trials(["COMPLETE"])]
    import keras

    # A diverged trial (NaN guard) counts its best epoch before the NaN, as max() does in fit's
    # (its stored value is the last epoch reported, as for any pruned trial).
    curves = [t.value if t.state.name == "COMPLETE" else
              max([v for v in t.intermediate_values.values() if v == v], default=0.0)
              for t in handle.trials()]
    return {"seconds_per_trial": elapsed / trials, "best": max(values) if values else 0.0,
            "mean": _mean(curves), "backend": keras.backend.backend()}


def keras_tuner(trials: int, epochs: int, workdir: str) -> dict[str, Any]:
    """KerasTuner's RandomSearch over the same space (its own draws), same epochs and holdout."""
    import keras
    import keras_tuner as kt

    d = _data()

    def build(hp: Any) -> Any:
        model = keras.Sequential([
            keras.Input((d.x_train.shape[1],)),
            keras.layers.Dense(hp.Choice("units", GRID["units"]),
                               activation=hp.Choice("activation", GRID["activation"])),
            keras.layers.Dropout(hp.Choice("dropout", GRID["dropout"])),
            keras.layers.Dense(1),
        ])
        learning_rate = hp.Choice("learning_rate", GRID["learning_rate"])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)])
        return model

    class Tuner(kt.RandomSearch):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["batch_size"] = trial.hyperparameters.Choice("batch_size", GRID["batch_size"])
            return super().run_trial(trial, *args, **kwargs)

    tuner = Tuner(build, objective=kt.Objective("val_accuracy", "max"), max_trials=trials,
                  seed=SEED, directory=workdir, project_name="kt", overwrite=True)
    start = time.perf_counter()
    tuner.search(d.x_train, d.y_train, epochs=epochs, validation_data=(d.x_val, d.y_val), verbose=0)
    elapsed = time.perf_counter() - start
    best = tuner.oracle.get_best_trials(1)[0].score
    return {"seconds_per_trial": elapsed / trials, "best": float(best or 0.0),
            "mean": _mean(t.score for t in tuner.oracle.trials.values()),
            "backend": keras.backend.backend()}


def noop_optuna_default(trials: int, url: str) -> dict[str, Any]:
    """A no-op trial (two suggestions) through Optuna's default RDB storage settings."""
    import optuna

    _quiet()
    study = optuna.create_study(storage=url, study_name=f"noop-{os.getpid()}-{time.time_ns()}")
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1),
                   n_trials=trials)
    elapsed = time.perf_counter() - start
    optuna.delete_study(study_name=study.study_name, storage=url)
    return {"seconds_per_trial": elapsed / trials, "best": 0.0}


def noop_studyhall(trials: int, url: str) -> dict[str, Any]:
    """The same no-op trial through studyhall's tuned storage for that URL."""
    import optuna

    from studyhall.storage import open_storage

    _quiet()
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=f"noop-{os.getpid()}-{time.time_ns()}")
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1),
                   n_trials=trials)
    elapsed = time.perf_counter() - start
    optuna.delete_study(study_name=study.study_name, storage=storage)
    return {"seconds_per_trial": elapsed / trials, "best": 0.0}


def _grid_spec(epochs: int, sampler: Any, pruner: Any = "none", seed: int = SEED) -> dict[str, Any]:
    space = GRID if sampler == "grid" else {k: list(v) for k, v in GRID.items()}
    return {"name": "bench", "objective": {"name": "breast_cancer", "epochs": epochs,
                                           "optimizer": "sgd"},
            "space": space, "sampler": sampler, "pruner": pruner, "seed": seed}


def _tpe_spec(epochs: int, seed: int) -> dict[str, Any]:
    """P3's search: TPE with median pruning on the grid's space."""
    return _grid_spec(epochs, {"name": "tpe", "n_startup_trials": 8},
                      {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 5}, seed)


def search_grid(epochs: int, seed: int, workdir: str, db: str = "grid") -> dict[str, Any]:
    """P3 baseline: the whole 216-configuration grid, no pruning."""
    import studyhall

    _quiet()
    _data()
    start = time.perf_counter()
    handle = studyhall.run_study(_grid_spec(epochs, "grid"), n_trials=216,
                                 storage=f"sqlite:///{workdir}/{db}.db")
    elapsed = time.perf_counter() - start
    best = handle.best_trial
    return {"seconds": elapsed, "best": best.value if best else 0.0, "trials": 216}


class _Reached(Exception):
    """Raised from ``on_progress`` to end a run once its best trial reaches the target."""


def search_tpe(epochs: int, seed: int, workdir: str, target: float, db: str = "tpe"
               ) -> dict[str, Any]:
    """P3: TPE + median pruning on the same space until it reaches ``target`` (or 216 trials).

    One run, ended from ``on_progress`` right after the first trial that reaches the target
    (the trial is stored by then: the exception only stops the worker's loop).
    """
    import studyhall

    _quiet()
    _data()
    spec = _tpe_spec(epochs, seed)
    seen: list[studyhall.Progress] = []

    def on_progress(progress: studyhall.Progress) -> None:
        seen.append(progress)
        if (progress.best_value or 0.0) >= target:
            raise _Reached

    start = time.perf_counter()
    with contextlib.suppress(_Reached):
        studyhall.run_study(spec, n_trials=216, storage=f"sqlite:///{workdir}/{db}.db",
                            on_progress=on_progress)
    return {"seconds": time.perf_counter() - start, "best": seen[-1].best_value or 0.0,
            "trials": seen[-1].finished}


def search_served(which: str, seed: int, epochs: int, url: str, target: float, name: str
                  ) -> dict[str, Any]:
    """P3 through a serving worker (``studyhall serve``) already up on ``url``: queue the grid
    or a TPE seed (``run_study(..., workers=0)``, in this new process) and watch its progress
    until the grid holds all 216 trials or the search's best reaches ``target``. The search's
    remaining trials then run before this returns, untimed, so the next run finds the worker
    free."""
    import studyhall
    from studyhall.studies._progress import poll

    _quiet()
    _data()
    spec = _grid_spec(epochs, "grid") if which == "grid" else _tpe_spec(epochs, seed)
    spec["name"] = name
    start = time.perf_counter()
    study = studyhall.run_study(spec, n_trials=216, storage=url, workers=0).study
    reached: Any = None
    while True:
        progress = poll(study._storage, study._study_id, 216)
        if reached is None and (progress.finished >= 216 or (which != "grid" and (
                progress.best_value or 0.0) >= target)):
            reached = (time.perf_counter() - start, progress)
        if progress.finished >= 216:
            break
        time.sleep(0.02)
    return {"seconds": reached[0], "best": reached[1].best_value or 0.0,
            "trials": reached[1].finished}


def search_session(epochs: int, seed: int, workdir: str, target: float, rounds: int
                   ) -> dict[str, Any]:
    """P3 in one Python session, as in a notebook: after an untimed grid (which loads or
    compiles every epoch), ``rounds`` of the grid and one TPE seed each (``seed + round``),
    alternating which goes first, each on a new database, timed like the runs of their own."""
    search_grid(epochs, SEED, workdir, "warm-up")
    grids: list[dict[str, Any]] = []
    tpes: list[dict[str, Any]] = []
    for r in range(rounds):
        for which in ("grid", "tpe") if r % 2 == 0 else ("tpe", "grid"):
            if which == "grid":
                grids.append(search_grid(epochs, SEED, workdir, f"grid-{r}"))
            else:
                tpes.append(search_tpe(epochs, seed + r, workdir, target, f"tpe-{r}"))
    return {"grid": grids, "tpe": tpes}


def throughput(workers: int, trials: int, epochs: int, workdir: str) -> dict[str, Any]:
    """P4: finished trials per second of ``workers`` processes on one study, from the first
    trial's start to the last trial's end (process start-up excluded), and from the moment all
    ``workers`` first run a trial at once (a worker still importing Keras while the first one
    trains is excluded too; the trials already running then are not counted)."""
    import studyhall

    _quiet()
    spec = _grid_spec(epochs, "random")
    handle = studyhall.run_study(spec, n_trials=trials, workers=workers,
                                 storage=f"sqlite:///{workdir}/p4.db")
    done = [t for t in handle.trials() if t.datetime_complete]
    end = max(t.datetime_complete for t in done)
    first = min(t.datetime_start for t in done)
    events = sorted([(t.datetime_start, 1) for t in done] + [(t.datetime_complete, -1)
                                                             for t in done])
    running, together = 0, first
    for when, change in events:
        running += change
        if running >= workers:
            together = when
            break
    counted = [t for t in done if t.datetime_start >= together]
    return {"trials_per_second": len(done) / (end - first).total_seconds(),
            "all_running_per_second": len(counted) / max((end - together).total_seconds(), 1e-6),
            "all_running_after_s": (together - first).total_seconds(), "trials": len(done)}


def memory(trials: int, epochs: int, workdir: str) -> dict[str, Any]:
    """P5: resident memory of one worker over ``trials`` breast-cancer trials (TPE preset space)."""
    import psutil

    import studyhall

    _quiet()
    proc = psutil.Process()
    rss: list[float] = []

    def on_progress(_p: Any) -> None:
        rss.append(proc.memory_info().rss / 2**20)

    studyhall.run_study("breast-cancer-tpe", n_trials=trials, seed=SEED,
                        storage=f"sqlite:///{workdir}/p5.db", on_progress=on_progress)
    return {"rss_mb": rss}


def _beale(x: float, y: float) -> float:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _seed_trials(url: str, name: str, n: int, low: float = 0.0, high: float = 1.0,
                 steps: int = 0) -> None:
    """Add ``n`` complete trials (``x``, ``y`` in [low, high], Beale's value, ``steps``
    learning-curve values) to study ``name``, created if missing. Untimed set-up: one
    transaction through Optuna's own table models, so 10,000 trials take seconds, not the
    minutes of 10,000 ``add_trial`` commits."""
    import datetime
    import random

    from optuna.distributions import FloatDistribution, distribution_to_json
    from optuna.storages._rdb import models
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    from studyhall.storage import open_storage

    storage = open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        study_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
    first = len(storage.get_all_trials(study_id, deepcopy=False))
    dist = distribution_to_json(FloatDistribution(low, high))
    finite = models.TrialValueModel.TrialValueType.FINITE
    finite_step = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    rng = random.Random(0)
    now = datetime.datetime.now()
    session = storage.scoped_session()
    for number in range(first, first + n):
        x, y = rng.uniform(low, high), rng.uniform(low, high)
        value = _beale(x, y)
        trial = models.TrialModel(number=number, study_id=study_id, state=TrialState.COMPLETE,
                                  datetime_start=now, datetime_complete=now)
        trial.params = [models.TrialParamModel(param_name=k, param_value=v, distribution_json=dist)
                        for k, v in (("x", x), ("y", y))]
        trial.values = [models.TrialValueModel(objective=0, value=value, value_type=finite)]
        trial.intermediate_values = [
            models.TrialIntermediateValueModel(step=s, intermediate_value=value * (steps - s),
                                               intermediate_value_type=finite_step)
            for s in range(steps)]
        session.add(trial)
    session.commit()
    session.close()
    storage.engine.dispose()


def growth(size: int, url: str, which: str) -> dict[str, Any]:
    """P7: a no-op trial (random sampler) and a TPE trial in a study of ``size`` trials
    (Optuna's TPE, or studyhall's, which models at most 1,000 of them)."""
    import optuna

    from studyhall.storage import open_storage

    if which == "studyhall-worker":
        return growth_worker(size, url)
    _quiet()
    name = f"p7-{size}"
    try:
        optuna.load_study(study_name=name, storage=url)
    except KeyError:
        _seed_trials(url, name, size)
    storage = open_storage(url) if which == "studyhall" else url
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=1))
    def f(t: Any) -> float:
        return t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1)

    study.optimize(f, n_trials=2)  # loads the study's trials into this process once
    start = time.perf_counter()
    study.optimize(f, n_trials=50)
    noop = (time.perf_counter() - start) / 50
    if which == "studyhall":
        from studyhall.studies.samplers import build_sampler

        study.sampler = build_sampler("tpe", {}, seed=1)
    else:
        study.sampler = optuna.samplers.TPESampler(seed=1)
    start = time.perf_counter()
    study.optimize(f, n_trials=3)
    tpe = (time.perf_counter() - start) / 3
    return {"seconds_per_trial": noop, "tpe_seconds_per_trial": tpe}


def _cli_seconds(*args: str) -> float:
    """Wall time of one ``studyhall`` command in a fresh process (start-up included)."""
    import subprocess

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "studyhall", *args], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"studyhall {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def growth_worker(size: int, url: str) -> dict[str, Any]:
    """P7 through the whole worker loop (``studyhall.run_study``: admission, heartbeat,
    progress, retries) on a Beale study of ``size`` trials with 5-step learning curves: 50
    random-sampler trials, then 4 TPE trials; then ``studyhall show`` and ``report`` on it."""
    import studyhall

    _quiet()
    name = f"p7w-{size}"
    spec = {"name": name, "objective": "beale",
            "space": {"x": {"low": -4.5, "high": 4.5}, "y": {"low": -4.5, "high": 4.5}},
            "sampler": "random", "seed": 1}
    import optuna

    with contextlib.suppress(KeyError):  # left by an attempt the database's restart cut short
        optuna.delete_study(study_name=name, storage=url)
    studyhall.run_study(spec, n_trials=1, storage=url)  # creates it with its spec
    _seed_trials(url, name, size - 1, -4.5, 4.5, steps=5)

    def timed(sampler: str, total: int, n: int) -> tuple[float, float]:
        stamps: list[float] = []
        start = time.perf_counter()
        studyhall.run_study({**spec, "sampler": sampler}, n_trials=total, storage=url,
                            on_progress=lambda _p: stamps.append(time.perf_counter()))
        assert len(stamps) == n, (len(stamps), n)
        # From the first trial's end to the last's: the loop, without the worker's start-up.
        return (stamps[-1] - stamps[0]) / (n - 1), stamps[0] - start

    loop, startup = timed("random", size + 51, 51)
    tpe, _ = timed("tpe", size + 55, 4)
    with tempfile.TemporaryDirectory() as out:
        show = _cli_seconds("show", name, "--storage", url)
        report = _cli_seconds("report", name, "--storage", url, "--out", out)
    return {"seconds_per_trial": loop, "tpe_seconds_per_trial": tpe, "start_seconds": startup,
            "show_seconds": show, "report_seconds": report}


TRAINING = {"optuna-keras-fit": optuna_keras_fit, "studyhall": studyhall_run,
            "studyhall-warm": studyhall_run, "keras-tuner": keras_tuner}
NOOP = {"optuna-default": noop_optuna_default, "studyhall": noop_studyhall}


def main() -> None:
    kind, name, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as workdir:
        if name == "studyhall":
            # Cold: compile everything, as a first run on a new machine does. "studyhall-warm"
            # keeps the persistent compile cache the harness gives it across rounds.
            os.environ["STUDYHALL_JAX_CACHE"] = os.path.join(workdir, "jax-cache")
        if kind == "train":
            result = TRAINING[name](trials, int(sys.argv[4]), workdir)
        elif kind == "grid":
            result = search_grid(int(sys.argv[4]), trials, workdir)
        elif kind == "tpe":
            result = search_tpe(int(sys.argv[4]), trials, workdir, float(sys.argv[5]))
        elif kind == "served":
            result = search_served(name, trials, int(sys.argv[4]), sys.argv[5],
                                   float(sys.argv[6]), sys.argv[7])
        elif kind == "session":
            result = search_session(int(sys.argv[4]), trials, workdir, float(sys.argv[5]),
                                    int(sys.argv[6]))
        elif kind == "workers":
            result = throughput(int(name), trials, int(sys.argv[4]), workdir)
        elif kind == "memory":
            result = memory(trials, int(sys.argv[4]), workdir)
        elif kind == "growth":
            result = growth(trials, sys.argv[4], name)
        else:
            url = sys.argv[4].replace("{tmp}", workdir)
            result = NOOP[name](trials, url)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
