"""The tests' command-line helper: a command that runs past its timeout takes every process
it started with it (a joblib sweep's workers would otherwise keep training beside the
next tests)."""

import subprocess
import time

import pytest

from conftest import run_cli, running

# A command that starts a worker of its own, writes the worker's pid, then waits forever.
LINGERING = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(worker.pid))
time.sleep(600)
"""


def test_run_cli_timeout_stops_the_processes_the_command_started(tmp_path):
    # 20 s: time for the command to start its worker even on a loaded 2-core machine
    (tmp_path / "lingering.py").write_text(LINGERING)
    pid_file = tmp_path / "worker.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli(str(pid_file), module="lingering", pythonpath=str(tmp_path), cwd=tmp_path, timeout=20)
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(worker)


def test_run_cli_returns_the_command_output_and_status(tmp_path):
    (tmp_path / "speaks.py").write_text("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    result = run_cli(module="speaks", pythonpath=str(tmp_path), cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
