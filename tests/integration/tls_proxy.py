"""A TLS-terminating TCP proxy on loopback, in front of a Tansu that advertises the proxy.

Tansu 0.6 has ``--cert``/``--key`` options but serves plain TCP whatever they say (and refuses
the two together), so TLS is terminated here. Kafka clients connect to the address a broker
advertises in its metadata, so the Tansu behind the proxy advertises the proxy's port: every
connection a client makes, bootstrap or not, goes through TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from segstream.runtime.broker import find_tansu_binary, free_port
from tests.certs import TlsFiles

LOOPBACK = "127.0.0.1"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


class TlsProxy:
    """Accepts TLS on a loopback port and forwards the bytes to ``target_port`` in plain TCP,
    from an event loop of its own thread (the tests around it are synchronous)."""

    def __init__(self, files: TlsFiles, target_port: int) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(files.cert, files.key)
        self.target_port = target_port
        self.port = free_port()
        self.connections = 0  # TLS handshakes completed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, LOOPBACK, self.port, ssl=self.context)

    def start(self) -> TlsProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class TlsCluster:
    """A dedicated Tansu reachable only through a :class:`TlsProxy`."""

    def __init__(self, files: TlsFiles, log_path: Path) -> None:
        self.files = files
        self.tansu_port = free_port()
        self.proxy = TlsProxy(files, self.tansu_port)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.proxy.port}"

    def client_options(self) -> dict[str, object]:
        return {
            "security_protocol": "SSL",
            "ssl_context": ssl.create_default_context(cafile=str(self.files.ca)),
        }

    def start(self) -> TlsCluster:
        self.proxy.start()
        env = {k: v for k, v in os.environ.items() if not k.endswith("LISTENER_URL")}
        command = [
            str(find_tansu_binary()), "broker",
            "--cluster-id", "segstream-tls",
            "--listener-url", f"tcp://{LOOPBACK}:{self.tansu_port}",
            "--advertised-listener-url", f"tcp://{LOOPBACK}:{self.proxy.port}",
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env | {"NO_COLOR": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, self.tansu_port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu did not listen: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self.proxy.stop()

    def __enter__(self) -> TlsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
