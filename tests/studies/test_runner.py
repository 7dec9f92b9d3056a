from __future__ import annotations

import pytest

import studyhall
from studyhall import SpecError, open_study, run_study
from studyhall.studies.runner import trial_seed
from tests.conftest import beale_spec


def test_a_study_resumes_where_it_stopped(sqlite_url, study_name):
    run_study(beale_spec(study_name, n_trials=10), storage=sqlite_url)
    handle = run_study(beale_spec(study_name, n_trials=10), storage=sqlite_url, n_trials=15)
    numbers = [t.number for t in handle.trials()]
    assert numbers == list(range(15))
    assert handle.state_counts()["COMPLETE"] == 15


def test_a_finished_study_runs_no_more_trials(sqlite_url, study_name):
    run_study(beale_spec(study_name, n_trials=5), storage=sqlite_url)
    handle = run_study(beale_spec(study_name, n_trials=5), storage=sqlite_url)
    assert len(handle.trials()) == 5


def test_two_workers_finish_a_40_trial_study_without_failures(sqlite_url, study_name):
    handle = run_study(beale_spec(study_name, n_trials=40), storage=sqlite_url, workers=2)
    counts = handle.state_counts()
    assert counts["COMPLETE"] == 40
    assert counts["FAIL"] == 0
    assert len(handle.trials()) == 40
    # Each worker ran with its own sampler seed: no two trials share parameters.
    assert len({tuple(t.params.values()) for t in handle.trials()}) == 40


def test_a_worker_joins_by_name_with_the_stored_spec(sqlite_url, study_name):
    run_study(beale_spec(study_name, n_trials=3), storage=sqlite_url)
    handle = open_study(study_name, sqlite_url)
    assert handle.spec is not None
    assert handle.spec.objective.name == "beale"
    assert handle.spec.n_trials == 3


def test_a_study_with_a_different_space_is_refused_and_left_alone(sqlite_url, study_name):
    run_study(beale_spec(study_name, n_trials=3), storage=sqlite_url)
    other = beale_spec(study_name, n_trials=6)
    other["space"] = {"x": {"low": -1.0, "high": 1.0}, "y": {"low": -1.0, "high": 1.0}}
    with pytest.raises(SpecError,
                       match=rf"study '{study_name}' .* was created with a different space"):
        run_study(other, storage=sqlite_url)
    assert len(open_study(study_name, sqlite_url).trials()) == 3


def test_a_study_with_a_different_objective_is_refused(sqlite_url, study_name):
    run_study(beale_spec(study_name, n_trials=2), storage=sqlite_url)
    other = {"name": study_name, "objective": "tests.objectives.helpers:fails_on_odd",
             "space": {"a": [1, 2]}, "n_trials": 2}
    with pytest.raises(SpecError, match="different objective and space"):
        run_study(other, storage=sqlite_url)


def test_a_study_made_by_plain_optuna_is_refused(sqlite_url, study_name):
    import optuna

    optuna.create_study(study_name=study_name, storage=sqlite_url)
    with pytest.raises(SpecError, match="was not created by studyhall"):
        run_study(beale_spec(study_name), storage=sqlite_url)


def test_each_trial_stores_a_seed_derived_from_the_study_seed(sqlite_url, study_name):
    handle = run_study(beale_spec(study_name, n_trials=4, seed=123), storage=sqlite_url)
    seeds = [t.user_attrs["seed"] for t in handle.trials()]
    assert seeds == [trial_seed(123, n) for n in range(4)]
    assert len(set(seeds)) == 4


def test_a_study_without_a_seed_gets_one_stored(sqlite_url, study_name):
    spec = beale_spec(study_name, n_trials=2)
    del spec["seed"]
    handle = run_study(spec, storage=sqlite_url)
    assert isinstance(handle.spec.seed, int)


def test_the_same_seed_gives_the_same_trials(tmp_path):
    a = run_study(beale_spec("same", n_trials=12, sampler="random"), storage=f"sqlite:///{tmp_path}/a.db")
    b = run_study(beale_spec("same", n_trials=12, sampler="random"), storage=f"sqlite:///{tmp_path}/b.db")
    assert [t.params for t in a.trials()] == [t.params for t in b.trials()]


def test_a_resumed_random_study_does_not_replay_its_first_draws(sqlite_url, study_name):
    run_study(beale_spec(study_name, n_trials=5, sampler="random"), storage=sqlite_url)
    handle = run_study(beale_spec(study_name, n_trials=10, sampler="random"), storage=sqlite_url)
    assert len({tuple(t.params.values()) for t in handle.trials()}) == 10


def test_a_failing_trial_is_recorded_and_the_study_goes_on(sqlite_url, study_name):
    spec = {"name": study_name, "objective": "tests.objectives.helpers:fails_on_odd",
            "space": {"a": {"low": 0.0, "high": 1.0}}, "n_trials": 6, "sampler": "random"}
    handle = run_study(spec, storage=sqlite_url)
    counts = handle.state_counts()
    assert counts["FAIL"] >= 3
    assert counts["COMPLETE"] == 6  # the budget counts finished trials, failures are retried
    failed = handle.trials(["FAIL"])[0]
    assert failed.user_attrs["fail_reason"] == f"RuntimeError: odd trial {failed.number}"


def test_progress_is_reported_after_every_trial(sqlite_url, study_name):
    seen = []
    run_study(beale_spec(study_name, n_trials=5), storage=sqlite_url, on_progress=seen.append)
    assert [p.finished for p in seen] == [1, 2, 3, 4, 5]
    assert seen[-1].budget == 5
    assert seen[-1].best_value == min(p.best_value for p in seen)


@pytest.mark.parametrize("workers", [-1, 1.5, True])
def test_workers_must_be_a_whole_number(sqlite_url, study_name, workers):
    with pytest.raises(SpecError, match=f"`workers` must be a whole number of processes; "
                                        f"got {workers!r}"):
        run_study(beale_spec(study_name), storage=sqlite_url, workers=workers)


def test_a_registered_objective_runs_by_name(sqlite_url, study_name):
    @studyhall.register_objective("parabola_test")
    def parabola(trial, params):
        return (params["x"] - 2.0) ** 2

    handle = run_study({"name": study_name, "objective": "parabola_test", "n_trials": 30,
                        "space": {"x": {"low": -10.0, "high": 10.0}}, "seed": 0},
                       storage=sqlite_url)
    assert handle.best_trial.value < 1.0


def test_a_multi_objective_study_has_a_pareto_front(sqlite_url, study_name):
    spec = {"name": study_name, "objective": "tests.objectives.helpers:two_values",
            "space": {"a": {"low": 0.0, "high": 1.0}}, "directions": ["minimize", "maximize"],
            "sampler": "nsga2", "n_trials": 8}
    handle = run_study(spec, storage=sqlite_url)
    assert handle.directions == ("minimize", "maximize")
    assert len(handle.best_trials) >= 1
    with pytest.raises(ValueError):
        _ = handle.best_trial


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_resumed_run_reads_the_earlier_trials_at_most_once(sqlite_url, study_name,
                                                             monkeypatch, sampler):
    from studyhall.storage import _mirror

    run_study(beale_spec(study_name, sampler=sampler, n_trials=6), storage=sqlite_url)
    read: list[int] = []  # numbers of the first run's trials, each time one is read

    def counted(load):
        def wrapper(*args, **kwargs):
            trials = load(*args, **kwargs)
            read.extend(t.number for t in trials if t.number < 6)
            return trials
        return wrapper

    monkeypatch.setattr(_mirror, "load_study_trials", counted(_mirror.load_study_trials))
    monkeypatch.setattr(_mirror, "load_trials_by_id", counted(_mirror.load_trials_by_id))
    handle = run_study(beale_spec(study_name, sampler=sampler, n_trials=6), storage=sqlite_url,
                       n_trials=8)
    # Optuna's cache in the worker reads them for TPE's first question; the run's budget and
    # the sampler's seed are counted in SQL, and so is "does a trial wait?"
    # (``storage/_cache.py``): the random sampler asks nothing else.
    assert sorted(read) == (list(range(6)) if sampler == "tpe" else [])
    assert handle.state_counts()["COMPLETE"] == 8


def test_a_worker_in_this_process_opens_the_database_once(sqlite_url, study_name,
                                                          monkeypatch):
    from studyhall.storage import _rdb

    opened = []
    create = _rdb._create

    def counted(url, heartbeat, optuna_kwargs):
        opened.append(heartbeat)
        return create(url, heartbeat, optuna_kwargs)

    monkeypatch.setattr(_rdb, "_create", counted)
    handle = run_study(beale_spec(study_name, n_trials=4), storage=sqlite_url)
    # The handle's storage is the worker's, heartbeats on.
    assert len(opened) == 1 and opened[0] is not None
    assert handle.state_counts()["COMPLETE"] == 4
    assert handle.study._storage.get_heartbeat_interval() == opened[0].interval
    handle = studyhall.join_study(study_name, sqlite_url, n_trials=6)
    assert len(opened) == 2 and handle.state_counts()["COMPLETE"] == 6


def test_a_worker_keeps_what_lived_before_its_trials_out_of_collections(sqlite_url, study_name):
    import gc
    import weakref

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    before = Cycle()
    alive = weakref.ref(before)
    gc.collect()
    frozen = []
    run_study(beale_spec(study_name, n_trials=3), storage=sqlite_url,
              on_progress=lambda _p: frozen.append(gc.get_freeze_count()))
    assert len(frozen) == 3 and min(frozen) > 0
    assert gc.get_freeze_count() == 0  # handed back: the caller's garbage is freed again
    del before
    gc.collect()
    assert alive() is None


def test_a_run_starts_without_collections_and_trials_run_with_them(sqlite_url, study_name):
    import gc

    collections = []
    enabled = []

    def seen(phase, info):
        if phase == "start":  # before the worker froze the heap, or after
            collections.append(gc.get_freeze_count() > 0)

    @studyhall.register_objective("gc_probe")
    def probe(trial, params):
        enabled.append((gc.isenabled(), collections.count(False)))
        return 0.0

    spec = {"name": study_name, "objective": "gc_probe", "space": {"x": [1, 2]},
            "sampler": "grid", "n_trials": 2}
    gc.callbacks.append(seen)
    try:
        run_study(spec, storage=sqlite_url)
    finally:
        gc.callbacks.remove(seen)
    # None from the run's start until the heap is frozen; on again for the trials and after.
    assert enabled == [(True, 0), (True, 0)] and gc.isenabled()
    with pytest.raises(SpecError):  # a start that fails leaves the collector on
        run_study(dict(spec, space={"x": [3]}), storage=sqlite_url)
    assert gc.isenabled()
