"""Run the comparisons: ``python -m benchmarks all|p1|p2|p3|p4|p5|p7 [--rounds R] [--trials N]``.

Each contender runs in a fresh process; rounds alternate the contenders (in rotated order) so
machine noise hits them alike; the table gives the median, the spread (min-max) and the ratio to
the baseline, which is what to compare on a noisy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from typing import Any

from benchmarks._contenders import NOOP

P1_CONTENDERS = [("optuna-keras-fit", "tensorflow"), ("optuna-keras-fit", "jax"),
                 ("keras-tuner", "tensorflow"), ("studyhall", "jax"), ("studyhall-warm", "jax")]
SEED_P3 = 42
P2_URLS = {"sqlite": "sqlite:///{tmp}/noop.db",
           "postgresql": os.environ.get("STUDYHALL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")}


_WARM_CACHE = tempfile.mkdtemp(prefix="studyhall-bench-jax-")


def _run(args: list[str], backend: str | None = None, retries: int = 2,
         cache: str = _WARM_CACHE) -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", STUDYHALL_JAX_CACHE=cache)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    proc = subprocess.run([sys.executable, "-m", "benchmarks._contenders", *args],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0 and retries and "OperationalError" in proc.stderr:
        # The database server went away (restarted by someone else): measure again later.
        print(f"  {' '.join(args)}: lost the database; again in 20 s", file=sys.stderr, flush=True)
        time.sleep(20)
        return _run(args, backend, retries - 1, cache)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            if args[0] == "train" and not result["best"] > 0:
                raise RuntimeError(f"contender {args} trained nothing:\n{proc.stderr[-3000:]}")
            return dict(result)
    raise RuntimeError(f"contender {args} failed:\n{proc.stderr[-3000:]}")


def _table(title: str, rows: dict[str, list[dict[str, Any]]], baseline: str, unit: str,
           accuracy: bool = True) -> str:
    scale = 1000.0 if unit.startswith("ms") else 1.0
    base = statistics.median(r["seconds_per_trial"] for r in rows[baseline])
    head = f"| contender | median {unit} | spread | speed vs {baseline} |"
    out = [f"### {title}", "", head + (" best val. accuracy (median) | mean over trials |"
                                        if accuracy else ""),
           "|---|---|---|---|" + ("---|---|" if accuracy else "")]
    for name, results in rows.items():
        times = [r["seconds_per_trial"] for r in results]
        med = statistics.median(times)
        row = (f"| {name} | {med * scale:.3g} | "
               f"{min(times) * scale:.3g}-{max(times) * scale:.3g} | "
               f"{base / med:.2f}x |")
        if accuracy:
            row += (f" {statistics.median(r['best'] for r in results):.4f} |"
                    f" {statistics.mean(r.get('mean', 0.0) for r in results):.4f} |")
        out.append(row)
    return "\n".join(out)


def p1(rounds: int, trials: int, epochs: int, contenders: list[tuple[str, str]]) -> str:
    rows: dict[str, list[dict[str, Any]]] = {f"{n} ({b})": [] for n, b in contenders}
    if ("studyhall-warm", "jax") in contenders:  # fill its compile cache once, untimed
        _run(["train", "studyhall-warm", str(trials), str(epochs)], "jax")
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for name, backend in order:
            result = _run(["train", name, str(trials), str(epochs)], backend)
            rows[f"{name} ({backend})"].append(result)
            print(f"  round {r + 1}: {name} ({backend}) {result['seconds_per_trial']:.3f} s/trial, "
                  f"best {result['best']:.4f}", file=sys.stderr, flush=True)
    baseline = f"{contenders[0][0]} ({contenders[0][1]})"
    return _table(f"P1: breast-cancer trial, seed grid space, {epochs} epochs, "
                  f"{trials} trials x {rounds} rounds",
                  rows, baseline, "s/trial")


def p2(rounds: int, trials: int, backends: list[str]) -> str:
    tables = []
    for backend in backends:
        rows: dict[str, list[dict[str, Any]]] = {n: [] for n in NOOP}
        for r in range(rounds):
            names = list(NOOP) if r % 2 == 0 else list(reversed(NOOP))
            for name in names:
                rows[name].append(_run(["noop", name, str(trials), P2_URLS[backend]]))
        tables.append(_table(f"P2: no-op trial on {backend}, {trials} trials x {rounds} rounds",
                             rows, "optuna-default", "ms/trial", accuracy=False))
    return "\n\n".join(tables)


def p3(rounds: int, epochs: int) -> str:
    """TPE + pruning against the full grid: wall time to reach the grid's best (- 0.5 points).

    Each round runs the grid and one TPE seed, each twice on a compile cache of its own: cold
    (empty, as on a new machine) and warm (what it compiled the first time). A shared cache
    favoured whoever ran later: the TPE runs loaded the epochs that the grid's cold run had
    compiled. The grid runs every round, alternating with TPE (first in even rounds), and each
    round's TPE time is compared with that round's grid: one grid run against a median of
    seeds let the machine's noise in a single run decide (its warm run took 17.8-24.7 s here
    within an hour). Then the same rounds in one process, as a notebook runs one study after
    another: the searches without a process's start (imports and first uses: ~1 s here, of a
    warm search's 1.5-2.1 s and a warm grid's 8-12 s; each run still opens a new database).
    Last, the same rounds again, each queued by a new process to a serving worker that stays up
    (``_p3_served``): a process each, with the start paid once by the worker.
    """
    def twice(args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="studyhall-bench-p3-") as cache:
            return _run(args, cache=cache), _run(args, cache=cache)

    grid_args = ["grid", "grid", str(SEED_P3), str(epochs)]
    grids = [twice(grid_args)]
    target = grids[0][0]["best"] - 0.005
    runs = []
    for r in range(rounds):
        if r and r % 2 == 0:  # round 0's grid ran above, for the target
            grids.append(twice(grid_args))
        runs.append(twice(["tpe", "tpe", str(SEED_P3 + r), str(epochs), str(target)]))
        if r % 2:
            grids.append(twice(grid_args))
        (cold, warm), (grid_cold, grid_warm) = runs[-1], grids[-1]
        print(f"  round {r + 1}: tpe {cold['trials']} trials, {cold['seconds']:.1f} s cold, "
              f"{warm['seconds']:.1f} s warm; grid {grid_cold['seconds']:.1f} s cold, "
              f"{grid_warm['seconds']:.1f} s warm", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="studyhall-bench-p3-") as cache:
        session = _run(["session", "session", str(SEED_P3), str(epochs), str(target),
                        str(rounds)], cache=cache)
    print("  one session: tpe " + ", ".join(f"{t['seconds']:.1f}" for t in session["tpe"])
          + " s; grid " + ", ".join(f"{g['seconds']:.1f}" for g in session["grid"]) + " s",
          file=sys.stderr, flush=True)
    served = _p3_served(rounds, epochs, target)
    out = [f"### P3: TPE + median pruning vs the full 216-configuration grid, {epochs} epochs, "
           f"{rounds} rounds", "",
           "| runs | grid wall s (median) | spread | TPE wall s (median) | spread "
           "| TPE trials (median) | best (grid, TPE) | share of grid time: medians "
           "| round by round (median) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for i, kind in enumerate(("cold", "warm")):
        out.append(_p3_row(f"a process each, {kind} compile cache", [g[i] for g in grids],
                           [t[i] for t in runs], target))
    out.append(_p3_row("one session (a notebook's)", session["grid"], session["tpe"], target))
    out.append(_p3_row("a process each, queued to a serving worker", served["grid"],
                       served["tpe"], target))
    return "\n".join(out)


def _p3_served(rounds: int, epochs: int, target: float) -> dict[str, list[dict[str, Any]]]:
    """The same rounds, each run queued by a process of its own (``run --workers 0``) to one
    ``studyhall serve`` worker that stays up, after an untimed grid on a new compile cache.
    Its ``--index 0`` seeds its samplers as ``run`` does, so it draws the other rows' trials."""
    runs: dict[str, list[dict[str, Any]]] = {"grid": [], "tpe": []}
    with tempfile.TemporaryDirectory(prefix="studyhall-bench-p3-") as tmp:
        url = f"sqlite:///{tmp}/queue.db"
        env = dict(os.environ, STUDYHALL_JAX_CACHE=os.path.join(tmp, "jax"))
        env.pop("KERAS_BACKEND", None)
        with open(os.path.join(tmp, "serve.log"), "w+") as log:
            server = subprocess.Popen([sys.executable, "-m", "studyhall", "serve", "--storage",
                                       url, "--index", "0", "-q"], stdout=log, stderr=log,
                                      env=env)
            try:
                def queued(which: str, seed: int, name: str) -> dict[str, Any]:
                    if server.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(f"the serving worker stopped:\n{log.read()[-3000:]}")
                    return _run(["served", which, str(seed), str(epochs), url, str(target),
                                 name])

                queued("grid", SEED_P3, "warm-up")
                for r in range(rounds):
                    for which in ("grid", "tpe") if r % 2 == 0 else ("tpe", "grid"):
                        runs[which].append(queued(which, SEED_P3 + r, f"{which}-{r}"))
            finally:
                server.terminate()
                server.wait(timeout=120)
    print("  queued to a serving worker: tpe " + ", ".join(
        f"{t['seconds']:.1f} s ({t['trials']} trials)" for t in runs["tpe"]) + "; grid "
        + ", ".join(f"{g['seconds']:.1f}" for g in runs["grid"]) + " s",
        file=sys.stderr, flush=True)
    return runs


def _p3_row(runs: str, grids: list[dict[str, Any]], tpes: list[dict[str, Any]],
            target: float) -> str:
    grid = [g["seconds"] for g in grids]
    tpe = [t["seconds"] for t in tpes]
    reached = sum(t["best"] >= target for t in tpes)
    shares = [t / g for t, g in zip(tpe, grid, strict=True)]
    return (f"| {runs} | {statistics.median(grid):.1f} | {min(grid):.1f}-{max(grid):.1f} | "
            f"{statistics.median(tpe):.1f} | {min(tpe):.1f}-{max(tpe):.1f} | "
            f"{statistics.median(t['trials'] for t in tpes):.0f} | "
            f"{statistics.median(g['best'] for g in grids):.4f}, "
            f"{statistics.median(t['best'] for t in tpes):.4f} ({reached} of {len(tpes)} "
            f"reached {target:.4f}) | "
            f"{100 * statistics.median(tpe) / statistics.median(grid):.0f}% | "
            f"{100 * statistics.median(shares):.0f}% "
            f"({', '.join(f'{100 * x:.0f}' for x in shares)}) |")


_SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(10_000_000):\n    x += i * i\n"


def _spin(processes: int) -> float:
    """Wall seconds for ``processes`` copies of a fixed pure-Python loop run at once."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(processes)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


def p4(rounds: int, trials: int, epochs: int) -> str:
    """Trial throughput of 1 and 2 workers, beside the machine's own ceiling: the same fixed
    CPU-bound loop in 1 and in 2 processes at once (two vCPUs of a VM need not give 2x)."""
    rows: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    spin: dict[int, list[float]] = {1: [], 2: []}
    _run(["workers", "1", str(trials), str(epochs)])  # fills the compile cache: P4 is throughput
    for r in range(rounds):
        for w in ((1, 2) if r % 2 == 0 else (2, 1)):
            rows[w].append(_run(["workers", str(w), str(trials), str(epochs)]))
            spin[w].append(w / _spin(w))

    def median(w: int, key: str) -> float:
        return statistics.median(r[key] for r in rows[w])

    def cells(w: int, key: str) -> str:
        return f"{median(w, key):.3g} | {median(w, key) / median(1, key):.2f}x"

    out = [f"### P4: trial throughput of 1 and 2 worker processes ({trials} breast-cancer trials, "
           f"{epochs} epochs, random sampler, {rounds} rounds)", "",
           "| workers | trials/s (median) | vs 1 worker | spread | all running: trials/s | "
           "vs 1 worker | all running after (s) | CPU-bound loop, vs 1 process |",
           "|---|---|---|---|---|---|---|---|"]
    for w, results in rows.items():
        whole = [r["trials_per_second"] for r in results]
        out.append(f"| {w} | {cells(w, 'trials_per_second')} | {min(whole):.3g}-{max(whole):.3g}"
                   f" | {cells(w, 'all_running_per_second')} | "
                   f"{median(w, 'all_running_after_s'):.2f} | "
                   f"{statistics.median(spin[w]) / statistics.median(spin[1]):.2f}x |")
    # Each round's 2-worker run beside its own 1-worker run: the machine drifts over minutes.
    paired = [two["trials_per_second"] / one["trials_per_second"]
              for one, two in zip(rows[1], rows[2], strict=True)]
    control = [b / a for a, b in zip(spin[1], spin[2], strict=True)]
    out += ["", "Round by round, 2 workers vs 1: " + ", ".join(f"{x:.2f}x" for x in paired)
            + f" (median {statistics.median(paired):.2f}x); the CPU-bound loop, 2 processes vs"
            " 1: " + ", ".join(f"{x:.2f}x" for x in control)
            + f" (median {statistics.median(control):.2f}x)."]
    return "\n".join(out)


def p5(trials: int, epochs: int) -> str:
    rss = _run(["memory", "memory", str(trials), str(epochs)])["rss_mb"]
    marks = [m for m in (1, 10, 50, 100, 150, 200, len(rss)) if m <= len(rss)]
    cells = " | ".join(f"{rss[m - 1]:.0f}" for m in dict.fromkeys(marks))
    return "\n".join([
        f"### P5: resident memory (MB) of one worker over {len(rss)} breast-cancer-tpe trials", "",
        "| trials done | " + " | ".join(str(m) for m in dict.fromkeys(marks))
        + " | growth 1 -> end | highest above trial 1 | growth 10 -> end |",
        "|---" * (len(dict.fromkeys(marks)) + 4) + "|",
        f"| RSS | {cells} | {rss[-1] - rss[0]:+.0f} MB | {max(rss) - rss[0]:+.0f} MB | "
        f"{rss[-1] - rss[min(9, len(rss) - 1)]:+.0f} MB |",
    ])


P7_CONTENDERS = {"optuna-default": "optuna-default (storage)", "studyhall": "studyhall (storage)",
                 "studyhall-worker": "studyhall worker loop"}


def _drop_p7_studies(url: str, sizes: list[int]) -> None:
    import optuna

    for n in sizes:
        for name in (f"p7-{n}", f"p7w-{n}"):
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=url)


def p7(sizes: list[int], backends: list[str]) -> str:
    """A no-op trial, a TPE trial, and ``show``/``report`` as a study grows. The storage rows
    time ``study.optimize`` on a bare study; the worker loop times ``studyhall.run_study``
    (admission, progress, heartbeat) from its first trial's end to its last's."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            url = P2_URLS[backend].replace("{tmp}", tmp)
            if backend != "sqlite":
                _drop_p7_studies(url, sizes)  # left by an interrupted run
            rows = []
            for which, label in P7_CONTENDERS.items():
                results = [_run(["growth", which, str(n), url]) for n in sizes]
                rows.append((label, results))
            head = " | ".join(f"no-op ms at {n}" for n in sizes)
            out += [f"### P7: cost as a study grows, {backend}", "",
                    f"| contender | {head} | growth | TPE s/trial at {sizes[-1]} |",
                    "|---" * (len(sizes) + 3) + "|"]
            for label, results in rows:
                ms = [r["seconds_per_trial"] * 1000 for r in results]
                out.append(f"| {label} | " + " | ".join(f"{m:.1f}" for m in ms) +
                           f" | {ms[-1] / ms[0]:.2f}x"
                           f" | {results[-1]['tpe_seconds_per_trial']:.2f} |")
            last = rows[-1][1][-1]
            out += ["", f"At {sizes[-1]} trials: worker start-up (to its first trial's end) "
                    f"{last['start_seconds']:.1f} s; "
                    f"`studyhall show` {last['show_seconds']:.1f} s; "
                    f"`studyhall report` {last['report_seconds']:.1f} s "
                    "(fresh processes, wall time).",
                    ""]
            print("\n".join(out[-(len(rows) + 7):]), file=sys.stderr, flush=True)
            if backend != "sqlite":
                _drop_p7_studies(url, sizes)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("which", help="all, or a comma-separated list of p1 p2 p3 p4 p5 p7")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10, help="P1 trials per contender and round")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--noop-trials", type=int, default=200)
    parser.add_argument("--contenders", help="P1 subset, e.g. studyhall,optuna-keras-fit")
    parser.add_argument("--p2-backends", default="sqlite,postgresql")
    parser.add_argument("--p4-trials", type=int, default=60)
    parser.add_argument("--p5-trials", type=int, default=200)
    parser.add_argument("--p7-sizes", default="50,10000")
    args = parser.parse_args(argv)
    known = ("p1", "p2", "p3", "p4", "p5", "p7")
    which = set(known if args.which == "all" else args.which.split(","))
    if not which <= set(known):
        parser.error(f"unknown comparison(s) {sorted(which - set(known))}; choose from {known}")
    contenders = P1_CONTENDERS
    if args.contenders:
        wanted = args.contenders.split(",")
        contenders = [c for c in P1_CONTENDERS if c[0] in wanted]
    print(f"# studyhall benchmarks, {date.today()}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"command: python -m benchmarks {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    if "p1" in which:
        print(p1(args.rounds, args.trials, args.epochs, contenders), flush=True)
        print()
    if "p2" in which:
        print(p2(args.rounds, args.noop_trials, args.p2_backends.split(",")), flush=True)
        print()
    if "p3" in which:
        print(p3(args.rounds, args.epochs), flush=True)
        print()
    if "p4" in which:
        print(p4(args.rounds, args.p4_trials, args.epochs), flush=True)
        print()
    if "p5" in which:
        print(p5(args.p5_trials, args.epochs), flush=True)
        print()
    if "p7" in which:
        sizes = [int(n) for n in args.p7_sizes.split(",")]
        print(p7(sizes, args.p2_backends.split(",")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
