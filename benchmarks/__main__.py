"""Run the comparisons: ``python -m benchmarks all|p1|p2 [--rounds R] [--trials N] [--epochs E]``.

Each contender runs in a fresh process; rounds alternate the contenders (in rotated order) so
machine noise hits them alike; the table gives the median, the spread (min-max) and the ratio to
the baseline, which is what to compare on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from typing import Any

from benchmarks._contenders import NOOP, TRAINING

P1_CONTENDERS = [("optuna-keras-fit", "tensorflow"), ("optuna-keras-fit", "jax"),
                 ("keras-tuner", "tensorflow"), ("studyhall", "jax"), ("studyhall-warm", "jax")]
P2_URLS = {"sqlite": "sqlite:///{tmp}/noop.db",
           "postgresql": os.environ.get("STUDYHALL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")}


_WARM_CACHE = tempfile.mkdtemp(prefix="studyhall-bench-jax-")


def _run(args: list[str], backend: str | None = None) -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", STUDYHALL_JAX_CACHE=_WARM_CACHE)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    proc = subprocess.run([sys.executable, "-m", "benchmarks._contenders", *args],
                          capture_output=True, text=True, env=env, timeout=3600)
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
    out = [f"### {title}", "", head + (" best val. accuracy (median) |" if accuracy else ""),
           "|---|---|---|---|" + ("---|" if accuracy else "")]
    for name, results in rows.items():
        times = [r["seconds_per_trial"] for r in results]
        med = statistics.median(times)
        row = (f"| {name} | {med * scale:.3g} | {min(times) * scale:.3g}-{max(times) * scale:.3g} | "
               f"{base / med:.2f}x |")
        if accuracy:
            row += f" {statistics.median(r['best'] for r in results):.4f} |"
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
    return _table(f"P1: breast-cancer trial, seed grid space, {epochs} epochs, {trials} trials x {rounds} rounds",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=["all", "p1", "p2"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10, help="P1 trials per contender and round")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--noop-trials", type=int, default=200)
    parser.add_argument("--contenders", help="P1 subset, e.g. studyhall,optuna-keras-fit")
    parser.add_argument("--p2-backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    contenders = P1_CONTENDERS
    if args.contenders:
        wanted = args.contenders.split(",")
        contenders = [c for c in P1_CONTENDERS if c[0] in wanted]
    print(f"# studyhall benchmarks, {date.today()}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"command: python -m benchmarks {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    if args.which in ("all", "p1"):
        print(p1(args.rounds, args.trials, args.epochs, contenders), flush=True)
        print()
    if args.which in ("all", "p2"):
        print(p2(args.rounds, args.noop_trials, args.p2_backends.split(",")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
