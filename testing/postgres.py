"""A throwaway PostgreSQL server for tests and benchmarks: its own data directory, a unix socket, no TCP.

`initdb` refuses to run as root, so as root every server command runs as the `postgres` user
(`runuser -u postgres --`) in a temporary directory that user owns. The binaries come from
`$PG_BINDIR`, `pg_config --bindir`, or Debian's /usr/lib/postgresql/<version>/bin (the newest).
Blocking calls: use them from fixtures or before an event loop starts, never on one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "postgres"
# Settings for a server whose data may be lost: nothing waits for the disk.
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and psql, or None."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout
            candidates.append(Path(out.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "psql", "postgres")):
            return folder
    return None


def unavailable_reason() -> str | None:
    """Why no throwaway server can start here, or None when one can."""
    if find_bindir() is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl found; apt-get install -y postgresql, or set PG_BINDIR)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "running as root, and there is no 'postgres' user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to run initdb as the postgres user"
    return None


class PostgresProcess:
    """A PostgreSQL server in a temporary directory, reached through a unix socket there."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError(unavailable_reason() or "PostgreSQL not found")
        self.bindir = found
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._running = False
        self._counter = 0

    # -- commands ---------------------------------------------------------------------------------

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", SUPERUSER, "--", *args] if self.as_root else args

    def _run(self, args: list[str], *, owner: bool = True, timeout: float = 60) -> str:
        cmd = self._as_owner(args) if owner else args
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def start(self) -> PostgresProcess:
        if self.as_root:
            import pwd

            entry = pwd.getpwnam(SUPERUSER)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.dir.chmod(0o700)  # the socket lives here: nobody else may connect
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        options = " ".join(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items())
        options += f" -c unix_socket_directories='{self.dir}'"
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ]
        )
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            try:
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            except (RuntimeError, subprocess.SubprocessError):
                pass

    def __enter__(self) -> PostgresProcess:
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases --------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL of `database` through the unix socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.dir), safe='/')}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql (as a client, over the socket); raises RuntimeError on an error."""
        return self._run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.dir),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            owner=False,
        )

    def create_database(self, name: str | None = None, *, template: str = "template1") -> str:
        """Create a database (a copy of `template`) and return its name."""
        if name is None:
            self._counter += 1
            name = f"test_{os.getpid()}_{self._counter}"
        for identifier in (name, template):
            if not _NAME_RE.match(identifier):
                raise ValueError(f"not a plain database name: {identifier!r}")
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending its sessions first."""
        if not _NAME_RE.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.psql("SELECT 1")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


class DatabaseFactory:
    """Fresh databases copied from templates, made a few steps ahead on a thread of their own.

    Copying a template costs 50-150 ms of mostly disk work; made ahead (and dropped) on a thread,
    it overlaps the tests instead of adding to them. One thread: the server's own counter names
    the databases, and CREATE DATABASE statements would only queue on the template anyway.
    """

    def __init__(self, server: PostgresProcess, ahead: dict[str, int]) -> None:
        from collections import deque
        from concurrent.futures import Future, ThreadPoolExecutor

        self.server = server
        self.ahead = ahead
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pg-databases")
        self._ready: dict[str, deque[Future[str]]] = {template: deque() for template in ahead}
        # Databases of finished tests, dropped once the next one asks for a database: a test's
        # own teardown (its app closing its pool) may still be running when its fixture ends.
        self._retired: list[str] = []

    def _refill(self, template: str) -> None:
        queue = self._ready[template]
        while len(queue) < self.ahead[template]:
            queue.append(self._executor.submit(self.server.create_database, template=template))

    def take(self, template: str) -> str:
        """The name of a fresh copy of `template`; raises what creating it raised."""
        for name in self._retired:
            self._executor.submit(self.server.drop_database, name)
        self._retired.clear()
        self._refill(template)
        name = self._ready[template].popleft().result()
        self._refill(template)
        return name

    def drop(self, name: str) -> None:
        """Drop a database when the next one is taken (its sessions are ended first)."""
        self._retired.append(name)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
