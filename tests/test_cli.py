from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from studyhall.cli import main

COMMANDS = ["run", "list", "show", "presets", "report", "export", "delete", "dashboard", "worker",
            "proxy", "data", "compare"]


def cli(*args: str, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studyhall", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"] if command else ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: studyhall")
    if command is None:
        for c in COMMANDS:
            assert c in out


def test_run_list_and_show_a_preset(capsys, sqlite_url):
    assert main(["run", "beale-tpe", "--trials", "12", "--storage", sqlite_url, "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "study beale-tpe in sqlite:///" in out
    assert "trials: 12 complete" in out
    assert "best: trial" in out
    assert main(["list", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert "beale-tpe" in out and " 12 " in out
    assert main(["show", "beale-tpe", "--storage", sqlite_url, "--top", "3", "--spec"]) == 0
    out = capsys.readouterr().out
    assert "top 3:" in out
    assert "seed: 5" in out and "n_trials: 12" in out


def test_run_resumes_to_the_new_total(capsys, sqlite_url):
    assert main(["run", "beale-tpe", "--trials", "10", "--storage", sqlite_url, "-q"]) == 0
    assert main(["run", "beale-tpe", "--trials", "15", "--storage", sqlite_url, "-q"]) == 0
    assert main(["show", "beale-tpe", "--storage", sqlite_url]) == 0
    assert "trials: 15 complete" in capsys.readouterr().out


def test_run_with_two_workers(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert main(["run", "beale-tpe", "--trials", "40", "--workers", "2", "--storage", url]) == 0
    assert "trials: 40 complete" in capsys.readouterr().out


def test_the_default_storage_is_studyhall_db_in_the_working_directory(tmp_path, capsys):
    assert main(["run", "beale-tpe", "--trials", "3", "-q"]) == 0
    assert (tmp_path / "studyhall.db").is_file()


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("beale-tpe", "breast-cancer-tpe", "breast-cancer-grid"):
        assert name in out


def test_an_objective_that_always_fails_exits_1(tmp_path, capsys):
    spec = tmp_path / "broken.yaml"
    spec.write_text("objective: tests.objectives.helpers:always_fails\n"
                    "n_trials: 3\nspace:\n  a: [1, 2]\n")
    assert main(["run", str(spec), "-q"]) == 1
    err = capsys.readouterr().err
    assert "every trial failed; last: ValueError: this objective is broken" in err


BASE = {"objective": "beale", "n_trials": 5,
        "space": {"x": {"low": -4.5, "high": 4.5}, "y": {"low": -4.5, "high": 4.5}}}
BAD_SPECS = {
    "unknown-sampler": {"sampler": "tpee"},
    "low-above-high": {"space": {"x": {"low": 2.0, "high": 1.0}, "y": [0.5]}},
    "empty-choices": {"space": {"x": [], "y": [0.5]}},
    "grid-without-values": {"sampler": "grid"},
    "unknown-objective": {"objective": "beal"},
    "unknown-key": {"samplr": "tpe"},
    "wrong-type": {"n_trials": "many"},
    "negative-trials": {"n_trials": -4},
    "unsupported-scheme": {"storage": "oracle://scott@db/x"},
    "closed-port": {"storage": "postgresql://postgres@127.0.0.1:1/test"},
    "missing-directory": {"storage": "sqlite:////no/such/dir/s.db"},
    "unknown-pruner-option": {"pruner": {"name": "median", "warmup": 3}},
    "bad-direction": {"direction": "up"},
    "log-with-zero-low": {"space": {"x": {"low": 0.0, "high": 1.0, "log": True}, "y": [0.5]}},
    "fixed-and-searched": {"objective": {"name": "beale", "x": 1.0}},
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS) + ["not-yaml"])
def test_a_bad_spec_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    path = tmp_path / f"{case}.yaml"
    if case == "not-yaml":
        path.write_text("objective: beale\nspace: {x: [1, 2\n")
    else:
        path.write_text(yaml.safe_dump({**BASE, **BAD_SPECS[case]}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("studyhall: error: ")
    assert "\n" not in err
    assert f"{case}.yaml" in err or "storage" in err
    assert not list(tmp_path.glob("*.db")), "a failed validation created a database file"


def run_main(args) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


BAD_ARGS = [
    (["run", "beale-tpe", "--trials", "0"],
     "argument --trials: must be a positive integer; got '0'"),
    (["run", "beale-tpe", "--workers", "two"],
     "argument --workers: must be a whole number (0 or more); got 'two'"),
    (["run", "beale-tpe", "--seed", "-1"],
     "argument --seed: must be an integer in [0, 2**32); got '-1'"),
    (["run", "beale-tpe", "--timeout", "0"],
     "argument --timeout: must be a positive number of seconds"),
    (["run", "no-such-preset"], "'no-such-preset' is neither a spec file nor a preset"),
    (["run", "beale-tpe", "--storage", "ftp://x/y"],
     "storage URL scheme 'ftp' from `storage` in the command line"),
    (["run", "beale-tpe", "--storage", "postgresql://postgres:pw@127.0.0.1:1/test"],
     "cannot use storage postgresql+psycopg://postgres:***@127.0.0.1:1/test"),
    (["show", "nope", "--storage", "sqlite:///x.db"], "no study named 'nope' in sqlite:///x.db"),
    (["list", "--storage", "mysql://root@127.0.0.1:1/test"],
     "cannot use storage mysql+pymysql://root@127.0.0.1:1/test"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["worker", "nope", "--storage", "sqlite:///x.db"],
     "no studies in sqlite:///x.db: the file 'x.db' does not exist"),
    (["worker", "beale-tpe", "--storage", "journal:///no/such/dir/s.log"],
     "directory that does not exist (/no/such/dir)"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[" ".join(a[:4]) for a, _ in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, capsys):
    assert run_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err
    assert ":pw@" not in err
    assert not (tmp_path / "studyhall.db").exists()


def test_the_real_command_exits_2_on_bad_input_and_prints_one_line(tmp_path):
    result = cli("run", "beale-tpee", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "did you mean preset 'beale-tpe'" in result.stderr


def test_light_commands_do_not_load_keras_or_tensorflow(tmp_path, sqlite_url):
    assert main(["run", "beale-tpe", "--trials", "2", "--storage", sqlite_url, "-q"]) == 0
    code = (
        "import sys, time; t = time.perf_counter(); from studyhall.cli import main; "
        f"main(['list', '--storage', {sqlite_url!r}]); "
        f"main(['show', 'beale-tpe', '--storage', {sqlite_url!r}]); "
        "print('HEAVY', sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') "
        "if m in sys.modules)); "
        "print('SECONDS', time.perf_counter() - t)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    seconds = float(result.stdout.split("SECONDS")[1])
    assert seconds < 5.0  # ~1.5 s on an idle 2-core machine
    start = time.perf_counter()
    assert cli("--help").returncode == 0
    assert time.perf_counter() - start < 3.0


def test_the_progress_bar_rates_only_the_trials_it_saw_finish():
    from studyhall.cli import _Bar

    with _Bar("study", quiet=False) as bar:
        bar.update(30, 40, best=0.9)  # a resumed study: 30 done before this run
        assert "30/40" in str(bar.bar) and "?trial/s" in str(bar.bar)
        bar.bar.start_t -= 2.0  # two seconds later, one more
        bar.update(31, 40, best=0.9)
        assert "2.00s/trial" in str(bar.bar), str(bar.bar)  # 1 trial in 2 s, not 31
