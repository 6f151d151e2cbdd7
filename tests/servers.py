"""Real servers on 127.0.0.1 for tests: a moto S3 server, an MLflow tracking server, and an
HTTP file server with ``Range`` requests and a switch that breaks a download off
(``tests/range_server.py``).

Each server is a child process started with :class:`subprocess.Popen`, remembered by its pid
and stopped by that pid (SIGTERM, then SIGKILL); ``restart`` brings one back on the same port
(and, for MLflow, the same store). Fixtures at the bottom; test modules import them.
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

HOST = "127.0.0.1"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


class Server:
    """A child-process server: ``start``, ``stop`` (by pid), ``restart`` on the same port."""

    ready_path = "/"
    ready_timeout = 60.0

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "server.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> Server:
        self.starts += 1
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
            cwd=self.workdir, start_new_session=True,
        )
        log.close()
        _wait_http(self.url + self.ready_path, self.proc, self.ready_timeout, self.log_path)
        return self

    def stop(self, hard: bool = False) -> None:
        """Stop the server (its process group, which it leads) by pid."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = self.proc.pid
        try:
            os.killpg(pid, signal.SIGKILL if hard else signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        """Characters in the log so far (an offset for reading only what comes later)."""
        return len(self.log_text())


class MotoServer(Server):
    """``python -m moto.server`` (S3 in memory: a restart starts empty)."""

    ready_path = "/moto-api/"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        return {**os.environ, **DUMMY_AWS}

    def storage_options(self) -> dict[str, str]:
        return {"endpoint_url": self.url}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=DUMMY_AWS["AWS_ACCESS_KEY_ID"], secret=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.url, skip_instance_cache=True, use_listings_cache=False,
        )

    def object_gets(self, bucket: str, since: int = 0) -> list[str]:
        """Keys read with ``GET /bucket/key`` (not listings) in the request log after character
        offset ``since`` (see :meth:`log_size`)."""
        paths = re.findall(r"GET (/\S+) HTTP/", self.log_text()[since:])
        prefix = f"/{bucket}/"
        return [p[len(prefix):] for p in paths if p.startswith(prefix) and "?" not in p]


class MlflowServer(Server):
    """``mlflow server`` with a SQLite backend and a local artifact folder (both kept across
    restarts)."""

    ready_path = "/health"
    ready_timeout = 90.0

    def command(self) -> list[str]:
        db = self.workdir / "mlflow.db"
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{db}",
            "--artifacts-destination", str(self.workdir / "artifacts"),
            "--host", HOST, "--port", str(self.port), "--workers", "1",
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        return env


class RangeServer(Server):
    """``tests/range_server.py`` serving the files of ``workdir/files``: ``HEAD``/``GET`` with
    ``Range``; its log holds one line per request, ``<METHOD> <path> range=<Range or ->``."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.root = self.workdir / "files"
        self.root.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        script = Path(__file__).resolve().parent / "range_server.py"
        return [sys.executable, "-u", str(script), str(self.root), str(self.port)]

    def requests(self, path: str, method: str = "GET", since: int = 0) -> list[str]:
        """The ``Range`` header (``-`` when none) of every ``method`` request for ``/path`` in
        the log after character offset ``since`` (see :meth:`log_size`)."""
        pattern = rf"^{method} /{re.escape(path.lstrip('/'))} range=(\S+)$"
        return re.findall(pattern, self.log_text()[since:], flags=re.MULTILINE)

    def cut_next_download_at(self, offset: int) -> None:
        """Break off the next response whose body covers byte ``offset`` right there."""
        (self.root / ".cut-at").write_text(str(offset))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch) -> dict[str, str]:
    """Dummy AWS credentials in the environment (where s3fs looks for them)."""
    for key, value in DUMMY_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return DUMMY_AWS


def serving(server: Server):
    """Start ``server``, yield it, and stop it by pid afterwards (the body of a fixture)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_server(tmp_path_factory, aws_env):
    yield from serving(MotoServer(tmp_path_factory.mktemp("moto")))


@pytest.fixture(scope="module")
def range_server(tmp_path_factory):
    """A :class:`RangeServer` for the module; put files under its ``root``."""
    yield from serving(RangeServer(tmp_path_factory.mktemp("range-server")))


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    yield from serving(MlflowServer(tmp_path_factory.mktemp("mlflow-server")))
