"""`latent-atlas serve` / `deploy`: one-line errors before anything starts, and against a real
`prefect server start` (the temporary server refuses schedules): serve registers a cron deployment whose
triggered run completes and writes scores; deploy registers one on a process pool without a worker."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows import schedule
from flows.cli.main import main
from flows.store import Store

TINY_FLAGS = ["--max-contexts", "160", "--n-latents", "512", "--k", "16", "--train-tokens", "40000",
              "--train-batch-size", "1024", "--layer", "2", "--max-latents", "24", "--dead-tokens", "20000"]
"""tests/conftest.py::TINY_RUN as flags, with fewer latents."""
CRON = "0 5 1 1 *"
"""05:00 on January 1st: no scheduled run fires while the tests run; the runs here are triggered."""
FLOW = schedule.PIPELINE_FLOW


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything that would contact a server, or start serving, fails the test."""

    def contacted(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a server was contacted")

    for name in ("check_server", "check_process_pool", "serve_pipeline", "deploy_pipeline"):
        monkeypatch.setattr(schedule, name, contacted)


@pytest.mark.parametrize("command", [["serve"], ["deploy", "--pool", "p"]])
@pytest.mark.parametrize("schedule_flags, message", [
    (["--cron", "0 3 * *"], "--cron '0 3 * *' is not a valid cron expression"),
    (["--cron", "61 * * * *"], "is not a valid cron expression"),
    (["--cron", "0 3 * * *", "--timezone", "Mars/Base"], "--timezone 'Mars/Base' is not an IANA timezone"),
])
def test_bad_cron_is_one_line_before_any_server(command, schedule_flags, message, no_server, capsys, tmp_path):
    argv = [*command, "--name", "nightly", *schedule_flags, "--store", str(tmp_path / "s")]
    assert message in _one_line_error(argv, capsys)


@pytest.mark.parametrize("command", [["serve"], ["deploy", "--pool", "p"]])
def test_no_api_url_names_the_fix(command, no_server, capsys, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    argv = [*command, "--name", "nightly", "--cron", "0 3 * * *", "--store", str(tmp_path / "s")]
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        err = _one_line_error(argv, capsys)
    assert "prefect server start" in err and "export PREFECT_API_URL=http://127.0.0.1:4200/api" in err


def test_deployment_parameters_are_absolute_json(tmp_path, monkeypatch):
    """A served or deployed run starts elsewhere: the store (and local inputs) become absolute paths."""
    from flows.config import RunConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("hello world\n")
    cfg = RunConfig(store="rel-store", data={"corpus": "corpus.txt", "model": "some/hub-id"}, seed=3)
    params = schedule.deployment_parameters(cfg)
    assert list(params) == ["cfg"]
    assert params["cfg"]["store"] == str(tmp_path / "rel-store")
    assert params["cfg"]["data"]["corpus"] == str(tmp_path / "corpus.txt")
    assert params["cfg"]["data"]["model"] == "some/hub-id"
    assert RunConfig.model_validate(params["cfg"]).seed == 3


# ---- against a real `prefect server start` ----


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process group we started, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


@pytest.fixture(scope="module")
def real_server(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """(API URL, environment for subprocesses) of a `prefect server start` with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_SERVER_UI_ENABLED": "false"}
    log_path = home / "server.log"
    port = url.rsplit(":", 1)[1].split("/")[0]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", port], env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server start exited with {proc.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server did not answer /api/health:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield url, env
    finally:
        _stop(proc)


@contextlib.contextmanager
def _client(url: str):
    """A sync Prefect client of the real server, whatever the test process's own PREFECT_API_URL is."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        yield client


def _cli_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "flows.cli.main", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_deployment(url: str, name: str, proc: subprocess.Popen, log_path: Path, timeout: float = 120):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with _client(url) as client:
        while True:
            with contextlib.suppress(ObjectNotFound):
                return client.read_deployment_by_name(name)
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no deployment {name} (serve exit {proc.poll()}):\n{_tail(log_path)}")
            time.sleep(0.5)


def _cron_schedules(deployment) -> list[tuple[str, str | None, bool]]:
    return [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules]


@pytest.mark.integration
def test_serve_registers_the_schedule_and_runs_the_pipeline(real_server, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, env = real_server
    store = tmp_path / "store"
    log_path = tmp_path / "serve.log"
    proc = _cli_process(["serve", "--name", "ci-serve", "--cron", CRON, "--store", str(store), *TINY_FLAGS],
                        env, log_path)
    try:
        deployment = _wait_for_deployment(url, f"{FLOW}/ci-serve", proc, log_path)
        assert _cron_schedules(deployment) == [(CRON, "UTC", True)]
        assert deployment.entrypoint == schedule.PIPELINE_ENTRYPOINT
        assert deployment.parameters["cfg"]["store"] == str(store)
        assert deployment.parameters["cfg"]["sae"]["n_latents"] == 512
        with temporary_settings(updates={PREFECT_API_URL: url}):
            run = run_deployment(f"{FLOW}/ci-serve", timeout=400, poll_interval=2, as_subflow=False, _sync=True)
        assert run.state is not None and run.state.is_completed(), f"{run.state}:\n{_tail(log_path)}"
        assert Store(store).read("scores").height > 0
    finally:
        _stop(proc)
    assert proc.returncode == 0, _tail(log_path)
    with _client(url) as client:  # pause_on_shutdown=False: stopping serve leaves the schedule on
        after = client.read_deployment_by_name(f"{FLOW}/ci-serve")
    assert _cron_schedules(after) == [(CRON, "UTC", True)] and not after.paused


@pytest.mark.integration
def test_deploy_registers_on_a_process_pool(real_server, tmp_path, capsys):
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    url, env = real_server
    argv = ["deploy", "--name", "ci-nightly", "--pool", "ci-pool", "--cron", "0 4 * * *", "--timezone",
            "Europe/Berlin", "--store", str(tmp_path / "store"), *TINY_FLAGS]
    with temporary_settings(updates={PREFECT_API_URL: url}):  # no pool yet: one line naming the fix
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "prefect work-pool create ci-pool --type process" in err and len(err.splitlines()) == 1

    with _client(url) as client:
        client.create_work_pool(WorkPoolCreate(name="ci-pool", type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
    log_path = tmp_path / "deploy.log"
    proc = _cli_process(argv, env, log_path)
    try:
        proc.wait(180)
    finally:
        _stop(proc)
    assert proc.returncode == 0, _tail(log_path)
    with _client(url) as client:
        deployment = client.read_deployment_by_name(f"{FLOW}/ci-nightly")
        workers = client.read_workers_for_work_pool("ci-pool")
    assert deployment.work_pool_name == "ci-pool" and workers == []
    assert _cron_schedules(deployment) == [("0 4 * * *", "Europe/Berlin", True)]
    assert deployment.entrypoint == schedule.PIPELINE_ENTRYPOINT
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                                      {"directory": str(schedule.PROJECT_DIR)}}]
    assert deployment.parameters["cfg"]["store"] == str(tmp_path / "store")
