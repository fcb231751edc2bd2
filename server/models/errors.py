"""The data layer's errors: domain errors (they know their HTTP status, nothing else of HTTP).

Both backends translate their driver's errors into these, so a caller sees the same error for
the same cause on SQLite and PostgreSQL: a unique violation is a Conflict (409), a value or
constraint the database refuses is InvalidQuery (400). Storage faults while it runs (locked,
full, read-only, down, no free connection) are told apart in faults.py and answered 503; a
database that cannot be opened at all is DatabaseUnavailable.
"""

from __future__ import annotations

from server.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable


class InvalidQuery(InvalidInput):
    """An unknown column or operator, or a value the database cannot store or compare."""


class ModelNotFound(NotFound):
    """No row with that primary key (or it was deleted meanwhile)."""


class UniqueViolation(Conflict):
    """A write would duplicate a unique value."""


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be opened (not there, refusing, unwritable); the message says which."""
