"""studyhall's TPE: exact below ``max_history`` trials, bounded cost and same quality above."""

from __future__ import annotations

import random
import time

import optuna
import pytest

from studyhall import SpecError, load_spec
from studyhall.studies._tpe import BoundedTPESampler
from studyhall.studies.samplers import build_sampler
from tests.conftest import beale_spec

DIST = {"x": optuna.distributions.FloatDistribution(-4.5, 4.5),
        "y": optuna.distributions.FloatDistribution(-4.5, 4.5)}


def _beale(x: float, y: float) -> float:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2 + (2.625 - x + x * y**3) ** 2


def _study(sampler, n: int) -> optuna.Study:
    rng = random.Random(n)
    study = optuna.create_study(sampler=sampler)
    points = [(rng.uniform(-4.5, 4.5), rng.uniform(-4.5, 4.5)) for _ in range(n)]
    study.add_trials([optuna.trial.create_trial(params={"x": x, "y": y}, distributions=DIST,
                                                value=_beale(x, y)) for x, y in points])
    return study


def _suggest(study: optuna.Study, n: int) -> list[dict]:
    study.optimize(lambda t: _beale(t.suggest_float("x", -4.5, 4.5),
                                    t.suggest_float("y", -4.5, 4.5)), n_trials=n)
    return [t.params for t in study.trials[-n:]]


def test_below_max_history_it_suggests_exactly_what_optunas_tpe_does():
    ours = _suggest(_study(build_sampler("tpe", {}, seed=3), 300), 5)
    optunas = _suggest(_study(optuna.samplers.TPESampler(seed=3), 300), 5)
    assert ours == optunas


def test_the_subset_keeps_the_best_trials_and_a_sample_of_the_rest():
    sampler = BoundedTPESampler(max_history=200, seed=0)
    study = _study(sampler, 2000)
    trials = study.get_trials()
    subset = sampler._subset(study, trials)
    assert len(subset) == 200 and len({t.number for t in subset}) == 200
    best = sorted(trials, key=lambda t: t.value)[:25]  # gamma(2000) = 25
    assert {t.number for t in best} <= {t.number for t in subset}
    assert [t.number for t in subset] == sorted(t.number for t in subset)


@pytest.mark.slow
def test_at_10000_trials_it_models_1000_and_finds_as_good_points(monkeypatch):
    seen: list[int] = []
    subset = BoundedTPESampler._subset
    monkeypatch.setattr(BoundedTPESampler, "_subset",
                        lambda self, study, trials: seen.append(len(trials)) or subset(
                            self, study, trials))
    results: dict[str, tuple[float, float]] = {}
    # Alternating rounds, best time of each: a one-off stall (another process, a first-call
    # import) must not decide a comparison of two ~0.1 s figures.
    for _ in range(2):
        for name, sampler in (("bounded", build_sampler("tpe", {}, seed=1)),
                              ("optuna", optuna.samplers.TPESampler(seed=1))):
            study = _study(sampler, 10_000)
            start = time.perf_counter()
            _suggest(study, 10)
            seconds = (time.perf_counter() - start) / 10
            value = min(t.value for t in study.trials[-10:])
            results[name] = min(results.get(name, (seconds, value)), (seconds, value))
    assert seen and min(seen) >= 10_000  # every suggestion modelled a subset of the whole study
    assert results["bounded"][0] < results["optuna"][0], results  # ~1.9x faster (Optuna 5.0)
    # The new points are at least as close to the optimum as most of the 10,000 random ones.
    assert results["bounded"][1] < 1.0, results


def test_max_history_is_validated_in_the_spec(study_name):
    spec = beale_spec(study_name, sampler="tpe")
    assert load_spec({**spec, "sampler": {"name": "tpe", "max_history": None}})
    with pytest.raises(SpecError, match="max_history must be an integer >= 100 or null; got 5"):
        load_spec({**spec, "sampler": {"name": "tpe", "max_history": 5}})
