"""The data layer's errors: domain errors (they know their HTTP status, nothing else of HTTP).

Both backends translate their driver's errors into these, so a caller sees the same error for the
same fault on SQLite and PostgreSQL: a unique violation is a Conflict (409), a value or constraint
the database refuses is InvalidQuery (400), a database that cannot answer now is
DatabaseUnavailable (503 with Retry-After).
"""

from __future__ import annotations

from server.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable

# What a client is told when the database cannot answer; the cause goes to the log only.
UNAVAILABLE_DETAIL = "the database cannot answer now; retry later"


class InvalidQuery(InvalidInput):
    """An unknown column or operator, or a value the database cannot store or compare."""


class ModelNotFound(NotFound):
    """No row with that primary key (or it was deleted meanwhile)."""


class UniqueViolation(Conflict):
    """A write would duplicate a unique value."""


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot answer now (locked, full, read-only, down, out of connections); retry later."""
