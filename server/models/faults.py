"""Storage faults: database errors that mean "try again later" (locked, busy, full, read-only,
down), told apart from bugs, counted, and logged once per outage.

Both backends' errors are classified here: SQLite's by result code, PostgreSQL's by SQLSTATE
class (asyncpg's errors carry `sqlstate`), and conditions with no driver code (a pool without a
free connection, a server that does not answer) as the StorageFault the backends raise.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter

log = logging.getLogger(__name__)

# SQLite's primary result codes (https://sqlite.org/rescode.html) that are faults of the storage
# rather than of the statement: the same statement succeeds once the condition clears.
_SQLITE_FAULTS = {
    5: "busy",  # SQLITE_BUSY: another connection holds the lock past busy_timeout
    6: "locked",  # SQLITE_LOCKED: a conflict inside one connection's shared cache
    8: "read-only",  # SQLITE_READONLY: the file, its folder or the connection cannot be written
    10: "io",  # SQLITE_IOERR: the disk failed a read or write
    13: "full",  # SQLITE_FULL: the disk (or max_page_count) is full
    14: "cant-open",  # SQLITE_CANTOPEN: the file or its journal cannot be opened
}
# PostgreSQL's SQLSTATE codes and classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
# that are faults of the service rather than of the statement; the longest matching prefix wins.
_POSTGRES_FAULTS = {
    "08": "down",  # connection exception: lost, refused, rejected
    "40": "busy",  # transaction rollback: a serialization failure or a deadlock, fine when retried
    "53": "full",  # insufficient resources...
    "53300": "connections",  # ...too many connections
    "55P03": "busy",  # lock not available (lock_timeout)
    "57": "down",  # operator intervention: shutting down, cannot connect now...
    "57014": "busy",  # ...query cancelled (statement_timeout)
    "25006": "read-only",  # read-only SQL transaction: a standby, or default_transaction_read_only
    "58": "io",  # system error: I/O
}
# Seconds a client is asked to wait: a lock clears fast, a full or read-only disk needs a person.
RETRY_AFTER = {"busy": 2, "locked": 2, "writers": 2, "connections": 2, "down": 5}
RETRY_AFTER_DEFAULT = 30
# Faults further apart than this belong to different outages (each logged once).
OUTAGE_QUIET_SECONDS = 30.0


class StorageFault(Exception):
    """A condition of the storage with no driver error code (a backend raises it): `kind` says which."""

    kind = "down"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class StorageBusy(StorageFault):
    """Too many writers are already waiting for the write lock, or one waited past the bound
    (PostgreSQL: no connection of the pool came free in time, kind "connections")."""

    kind = "writers"


def storage_fault(exc: BaseException) -> str | None:
    """The kind of storage fault `exc` is ("busy", "full", "read-only", ...), or None for any other
    error (a bug, a constraint, bad SQL), which stays a 500."""
    if isinstance(exc, StorageFault):
        return exc.kind
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return _POSTGRES_FAULTS.get(sqlstate) or _POSTGRES_FAULTS.get(sqlstate[:2])
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return _SQLITE_FAULTS.get(code & 0xFF)
        # Without a code (raised by Python's sqlite3 module itself): by SQLite's messages.
        message = str(exc).lower()
        for text, kind in (("locked", "busy"), ("busy", "busy"), ("is full", "full"), ("readonly", "read-only")):
            if text in message:
                return kind
    return None


def retry_after(kind: str) -> int:
    return RETRY_AFTER.get(kind, RETRY_AFTER_DEFAULT)


class StorageFaults:
    """Counts storage faults by kind; one warning when an outage starts, one line when the next
    fault shows the previous outage is over (faults OUTAGE_QUIET_SECONDS apart)."""

    def __init__(self, quiet: float = OUTAGE_QUIET_SECONDS) -> None:
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self._last: float | None = None
        self._in_outage = 0

    def record(self, kind: str, exc: BaseException) -> None:
        now = time.monotonic()
        self.counts[kind] += 1
        if self._last is None or now - self._last > self.quiet:
            if self._in_outage:
                log.info("the previous storage outage ended with %d faults", self._in_outage)
            self._in_outage = 0
            log.warning(
                "storage unavailable (%s: %s); answering 503 with Retry-After while it lasts",
                kind,
                exc,
            )
        else:
            log.debug("storage still unavailable (%s): %s", kind, exc)
        self._in_outage += 1
        self._last = now
