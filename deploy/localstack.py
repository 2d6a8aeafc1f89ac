"""Real Mosquitto and Prometheus processes on loopback, for the demo, the tests and bench/.

One way to start the real parts: the demo fleet, pytest fixtures and the benchmarks all
come through here, so what the tests exercise is what the demo runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class MissingPrerequisite(RuntimeError):
    """A binary (or privilege) the real part needs is not on this machine."""


def find_binary(name: str, *extra_dirs: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([*extra_dirs, os.environ.get("PATH", ""),
                                                    "/usr/sbin", "/sbin"]))
    if path is None:
        raise MissingPrerequisite(f"{name} not found (apt-get install it; see scripts/bootstrap)")
    return path


def free_port(udp: bool = False, host: str = "127.0.0.1") -> int:
    """A TCP (or UDP) port on ``host`` that nobody is bound to right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; raise TimeoutError naming what we waited for."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as err:  # the thing may not be up yet
            last_error = err
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Process:
    """A child process with its log in a file; stop() is idempotent."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Mosquitto(Process):
    """A real mosquitto broker on a loopback port, with persistence in its own folder."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 listener_conf: str | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        listener = listener_conf or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        # As root, mosquitto drops to its own user and then cannot write the session store
        # into a private temporary folder: sessions would silently not survive a restart.
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            listener + user
            + f"persistence true\npersistence_location {workdir}/\n"
            + "autosave_interval 1\n"
            # A collector's backlog must never be dropped silently (the default is 1000).
            # Not 0 (unlimited): mosquitto 2.0.11 then drops an MQTT 5 client whose QoS 1
            # publish the ACL refuses.
            + "max_queued_messages 10000000\nmax_inflight_messages 0\n"
            + "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n"
            + extra_conf
        )
        super().__init__([find_binary("mosquitto"), "-c", str(conf)], workdir / "mosquitto.log")

    def start(self) -> None:
        super().start()
        wait_until(lambda: port_open(self.port) or not self.running, 10, "mosquitto to listen")
        if not self.running:
            raise RuntimeError(f"mosquitto exited:\n{self.log()}")


class Prometheus(Process):
    """A real Prometheus scraping the given targets every ``scrape_interval``."""

    def __init__(self, workdir: Path, targets: Sequence[str], scrape_interval: str = "1s",
                 port: int | None = None, rule_files: Sequence[str] = (),
                 alertmanagers: Sequence[str] = ()):
        self.workdir = workdir
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(Path(f).resolve()) for f in rule_files],
            # The job name the alert rules expect (alerts/rules/collector.yml).
            "scrape_configs": [{"job_name": "bridgewatch", "static_configs": [
                {"targets": list(targets)}]}],
        }
        if alertmanagers:
            config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": list(alertmanagers)}]}]}
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is valid YAML
        super().__init__([
            find_binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ], workdir / "prometheus.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_until(lambda: self._get("/-/ready") or not self.running, 30, "prometheus ready")
        if not self.running:
            raise RuntimeError(f"prometheus exited:\n{self.log()}")

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return resp.read()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (raises on a query error)."""
        body = json.loads(self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return body["data"]["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts the rules hold now, pending or firing (``/api/v1/alerts``)."""
        return json.loads(self._get("/api/v1/alerts"))["data"]["alerts"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) != 1:
            raise RuntimeError(f"{expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])
