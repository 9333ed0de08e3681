"""End to end: `ray job submit -- python -m prunesearch run ...` against a real `ray start` head.

The head runs with token authentication (Ray 2.60's default for `ray start --head`); the job
client authenticates with ``RAY_AUTH_MODE=token`` (it reads ``~/.ray/auth_token``). The head is
started with ``--block`` in its own session, and only the processes of that session are stopped
afterwards: ``ray stop`` would kill every Ray instance on the machine, other tests' included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

RAY_CLI = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_processes(sid: int) -> list[psutil.Process]:
    procs = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                procs.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return procs


def _stop_head(head: subprocess.Popen, sid: int) -> None:
    """Stop the head we started and every process of its session (by pid), nothing else."""
    head.send_signal(signal.SIGTERM)  # `ray start --block` shuts its processes down on SIGTERM
    try:
        head.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _session_processes(sid):
        time.sleep(0.2)
    for proc in _session_processes(sid):
        try:
            proc.kill()
        except psutil.Error:
            pass
    if head.poll() is None:
        head.kill()
        head.wait(timeout=10)


def _head_logs(temp_dir: Path) -> str:
    """The head's own output and its dashboard's log tail, for a failure's message (a head
    that died mid-test says why only there)."""
    parts = []
    for path in [temp_dir / "head.log",
                 *sorted(temp_dir.glob("session_*/logs/dashboard.log"))[-1:],
                 *sorted(temp_dir.glob("session_*/logs/dashboard.err"))[-1:]]:
        if path.is_file():
            parts.append(f"\n--- {path.name} (tail) ---\n{path.read_text(errors='replace')[-2500:]}")
    return "".join(parts)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict]:
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="psjob", dir="/tmp"))
    dashboard_port = _free_port()
    cmd = [
        RAY_CLI, "start", "--head", "--block", "--disable-usage-stats",
        f"--port={_free_port()}", "--num-cpus=2", "--resources", json.dumps({"evaluator": 2}),
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}", f"--temp-dir={temp_dir}",
        # Fixed default ports would collide with other Ray instances on the machine.
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = open(temp_dir / "head.log", "w")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    sid = os.getsid(head.pid)
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and head.poll() is None:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                status = 200
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                time.sleep(0.25)
                continue
            break
        if status is None:
            pytest.fail("ray head did not come up:\n" + (temp_dir / "head.log").read_text()[-3000:])
        yield {"url": url, "unauthenticated_status": status, "temp_dir": temp_dir}
    finally:
        _stop_head(head, sid)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_runs_a_search_on_a_token_protected_head(ray_head, repo_root, tmp_path):
    # Token authentication is on: the dashboard refuses a request without the token.
    assert ray_head["unauthenticated_status"] == 401

    run_dir = tmp_path / "job-run"  # absolute: the job runs in a copy of the working directory
    storage = tmp_path / "storage"
    submission_id = f"prunesearch-test-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    cmd = [
        RAY_CLI, "job", "submit", "--address", ray_head["url"],
        "--submission-id", submission_id, "--working-dir", str(repo_root), "--",
        # The entrypoint runs with the head's PATH: name the project's interpreter.
        sys.executable, "-m", "prunesearch", "run", "configs/synthetic-small.yaml",
        "--output", str(run_dir), "--set", "cluster.num_evaluators=2",
        "--set", f"storage=file://{storage}",
    ]
    submit = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    status = subprocess.run(
        [RAY_CLI, "job", "status", "--address", ray_head["url"], submission_id],
        env=env, capture_output=True, text=True, timeout=30,
    )
    detail = (f"submit rc={submit.returncode}\n{submit.stdout[-4000:]}\n{submit.stderr[-2000:]}"
              + _head_logs(ray_head["temp_dir"]))
    status_text = re.sub(r"\x1b\[[0-9;]*m", "", status.stdout + status.stderr)
    assert re.search(r"\bSUCCEEDED\b|\bsucceeded\b", status_text), status_text + detail
    assert submit.returncode == 0, detail

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["evaluations"] == 16
    journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 16
    assert len({entry["id"] for entry in journal}) == 16
    assert all(entry["status"] == "ok" for entry in journal)
    pareto = (run_dir / "pareto.csv").read_text().splitlines()
    assert pareto[0].startswith("id,") and len(pareto) >= 2
    assert (run_dir / "config.yaml").is_file()
    # The run directory is mirrored to storage/<run name>, journal included.
    mirrored = storage / run_dir.name
    assert (mirrored / "journal.jsonl").read_text() == (run_dir / "journal.jsonl").read_text()
    assert json.loads((mirrored / "summary.json").read_text())["status"] == "complete"


def test_job_client_without_token_mode_is_refused(ray_head, repo_root):
    """Without RAY_AUTH_MODE=token the job CLI cannot talk to the head (auth is really on)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["RAY_AUTH_MODE"] = "disabled"
    result = subprocess.run(
        [RAY_CLI, "job", "list", "--address", ray_head["url"]],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "authentication token" in output.lower() or "401" in output, (
        output[-2000:] + _head_logs(ray_head["temp_dir"]))
