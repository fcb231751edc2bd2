"""A JSON Schema compiled once per declaration: the schema (for OpenAPI), a fast validator, a lazy
lister of violations and the reference validator."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jsonschema_rs
from jsonschema import Draft202012Validator

from server.routing.lazy_errors import lazy_validator

log = logging.getLogger(__name__)

# One violation: the path into the instance (keys and indexes) and a message.
Violation = tuple[list[str | int], str]
# A message quotes the offending value (a 1 MiB string quotes 1 MiB): kept to this many characters.
MAX_MESSAGE_CHARS = 300


class CompiledSchema:
    """A JSON Schema compiled once: the schema itself (for OpenAPI) and its validators.

    All are Draft 2020-12 with format checking on. `jsonschema_rs` answers "valid?" on every
    request in under a microsecond; the violations of a document already known to be invalid
    come from a lazy jsonschema walk that skips valid parts (routing/lazy_errors.py), so listing
    the first few costs little whatever the document's size. `full` is the plain reference
    validator (the tests compare it with the fast one).
    """

    __slots__ = ("fast", "full", "is_valid", "lazy", "schema")

    # Counts every compilation in the process, so tests can prove requests never compile.
    compilations: ClassVar[int] = 0

    def __init__(self, schema: Mapping[str, Any]) -> None:
        Draft202012Validator.check_schema(dict(schema))  # a broken schema fails at import, not per request
        self.schema = schema
        # offline: a remote $ref must never turn into a blocking download.
        self.fast = jsonschema_rs.Draft202012Validator(dict(schema), validate_formats=True, offline=True)
        self.full = Draft202012Validator(dict(schema), format_checker=Draft202012Validator.FORMAT_CHECKER)
        self.lazy = lazy_validator(dict(schema))
        # The yes/no answer, from the compiled Rust validator: its own method, not a method of
        # ours calling it, as every request with a schema asks.
        self.is_valid: Callable[[Any], bool] = self.fast.is_valid
        CompiledSchema.compilations += 1

    def violations(self, instance: Any, limit: int) -> tuple[list[Violation], bool]:
        """The first `limit` violations as (path, message), in schema order, and whether there
        are more; the rest of the document is not walked. Empty when valid."""
        if self.fast.is_valid(instance):
            return [], False
        found: list[Violation] = []
        for error in self.lazy.iter_errors(instance):
            if len(found) >= limit:
                return found, True
            found.append((list(error.absolute_path), shorten(error.message)))
        if not found:
            # The two disagree (jsonschema's "email" format only looks for an "@"): the fast
            # validator decides, so let it name the violation (its first: its binding lists
            # every violation before yielding one).
            log.warning("jsonschema found no error where jsonschema_rs did; using the latter's")
            try:
                self.fast.validate(instance)
            except jsonschema_rs.ValidationError as exc:
                found = [(list(exc.instance_path), shorten(exc.message))]
        return found, False

    def errors(self, instance: Any) -> list[Violation]:
        """Every violation as (path, message), sorted by path; empty when valid (tests and tools:
        requests list a bounded number with `violations`)."""
        found, _ = self.violations(instance, sys.maxsize)
        return sorted(found, key=lambda item: [str(p) for p in item[0]])


def shorten(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` cut to `limit` characters: a violation's message quotes the offending value."""
    return message if len(message) <= limit else message[: limit - 1] + "\u2026"


def json_pointer(path: list[str | int]) -> str:
    """RFC 6901 pointer for a path into a JSON document ('' is the root)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
