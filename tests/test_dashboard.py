"""`studyhall dashboard`: a real server on a free port, looked at in headless Chromium.

The browser test needs /usr/bin/chromium (Debian's `chromium` package) and Playwright for Python
(its bundled node driver only; never `playwright install`). Without them it skips with the
reason, and fails instead under STUDYHALL_REQUIRE_SERVICES=1, as in CI.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import studyhall
from studyhall.cli import main
from studyhall.reports.dashboard import dashboard_url
from tests.conftest import REQUIRE_SERVICES, beale_spec

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_browser() -> None:
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("Playwright for Python is missing (pip install playwright)")
    if problems:
        message = "browser test needs " + "; ".join(problems)
        if REQUIRE_SERVICES:
            pytest.fail(message + " (STUDYHALL_REQUIRE_SERVICES=1)")
        pytest.skip(message)


def artifact_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $STUDYHALL_TEST_ARTIFACTS if set (CI keeps it), else tmp_path."""
    path = Path(os.environ.get("STUDYHALL_TEST_ARTIFACTS") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_until_serving(proc: subprocess.Popen, port: int, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"dashboard did not serve on port {port} within {seconds} s: "
                f"{log.read_text()[-2000:]}")


def test_the_dashboard_shows_a_finished_study_in_a_real_browser(sqlite_url, study_name, tmp_path):
    need_browser()
    from playwright.sync_api import sync_playwright

    handle = studyhall.run_study(beale_spec(study_name, n_trials=7), storage=sqlite_url)
    n_trials = len(handle.trials())
    first = min(handle.trials(), key=lambda t: t.number)
    port = free_port()
    out, err = tmp_path / "dashboard.out", tmp_path / "dashboard.err"
    with out.open("w") as stdout, err.open("w") as stderr:  # files: access logs never fill a pipe
        command = [sys.executable, "-m", "studyhall", "dashboard", "--storage", sqlite_url,
                   "--port", str(port)]
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=tmp_path)
    try:
        wait_until_serving(proc, port, err)
        url = f"http://127.0.0.1:{port}/dashboard/"
        assert out.read_text().splitlines()[0] == (
            f"optuna-dashboard for {sqlite_url} at {url} (Ctrl-C to stop)")
        shots = artifact_dir(tmp_path)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(url)
                # From the study list into the study's page, as a person would.
                page.get_by_text(study_name, exact=False).first.click()
                page.wait_for_url(re.compile(r"/dashboard/studies/\d+$"))
                page.get_by_text("Best Trial").first.wait_for()
                page.screenshot(path=str(shots / "dashboard-study.png"), full_page=True)
                page.goto(page.url + "/trials")
                page.get_by_text(f"{n_trials} Trials", exact=True).wait_for()
                page.get_by_text(f"Trial {first.number} (trial_id=").wait_for()
                page.screenshot(path=str(shots / "dashboard-trials.png"))
                body = page.inner_text("body")
            finally:
                browser.close()
        assert study_name in body
        pattern = r"^([xy]) (-?[0-9.]+(?:e[-+]?\d+)?)$"
        shown = {m[0]: float(m[1]) for m in re.findall(pattern, body, re.M)}
        assert shown["x"] == pytest.approx(first.params["x"], rel=1e-12)
        assert shown["y"] == pytest.approx(first.params["y"], rel=1e-12)
        for name in ("dashboard-study.png", "dashboard-trials.png"):
            assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it cleanly
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_port_in_use_exits_2_with_one_line_naming_it(sqlite_url, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", "--storage", sqlite_url, "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"studyhall: error: port {port} on 127.0.0.1 is already in use; "
                            "pick another with --port.\n")
    assert captured.out == ""  # no URL for a server that never started


@pytest.mark.parametrize("args,message", [
    (["--port", "70000"], "argument --port: must be a port number in 1..65535; got '70000'"),
    (["--storage", "ftp://x/y"], "storage URL scheme 'ftp'"),
    (["--host", "no-such-host.invalid"], "cannot resolve host 'no-such-host.invalid'"),
])
def test_bad_dashboard_arguments_exit_2_with_one_line(args, message, capsys):
    try:
        code = main(["dashboard", "--port", str(free_port()), *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_the_dashboard_command_does_not_load_keras_tensorflow_or_jax(sqlite_url, tmp_path):
    studyhall.run_study(beale_spec("s", n_trials=2), storage=sqlite_url)
    code = (
        "import sys, optuna_dashboard\n"
        "seen = {}\n"
        "def fake(storage, host, port, **kw):\n"
        "    seen.update(host=host, port=port, storage=type(storage).__name__)\n"
        "optuna_dashboard.run_server = fake\n"
        "from studyhall.cli import main\n"
        f"assert main(['dashboard', '--storage', {sqlite_url!r}, '--port', '{free_port()}']) == 0\n"
        "print('SEEN', seen)\n"
        "print('HEAVY', sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "SEEN {'host': '127.0.0.1'" in result.stdout
    # The tuned storage object from studyhall.storage, not a URL string Optuna would open untuned.
    assert "'storage': 'str'" not in result.stdout


def test_dashboard_urls_name_a_browsable_address():
    assert dashboard_url("127.0.0.1", 8080) == "http://127.0.0.1:8080/dashboard/"
    assert dashboard_url("0.0.0.0", 80) == "http://127.0.0.1:80/dashboard/"
    assert dashboard_url("::1", 9000) == "http://[::1]:9000/dashboard/"
