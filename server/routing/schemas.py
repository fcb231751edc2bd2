"""A JSON Schema compiled once per declaration: the schema (for OpenAPI), a fast and a full validator."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import jsonschema_rs
from jsonschema import Draft202012Validator

log = logging.getLogger(__name__)

# One violation: the path into the instance (keys and indexes) and a message.
Violation = tuple[list[str | int], str]


class CompiledSchema:
    """A JSON Schema compiled once: the schema itself (for OpenAPI), a fast and a full validator.

    Both are Draft 2020-12 with format checking on. `jsonschema_rs` answers "valid?" on every
    request in under a microsecond; the reference `jsonschema` only runs on a document already
    known to be invalid, to list every violation with its path.
    """

    __slots__ = ("fast", "full", "schema")

    # Counts every compilation in the process, so tests can prove requests never compile.
    compilations: ClassVar[int] = 0

    def __init__(self, schema: Mapping[str, Any]) -> None:
        Draft202012Validator.check_schema(dict(schema))  # a broken schema fails at import, not per request
        self.schema = schema
        # offline: a remote $ref must never turn into a blocking download.
        self.fast = jsonschema_rs.Draft202012Validator(dict(schema), validate_formats=True, offline=True)
        self.full = Draft202012Validator(dict(schema), format_checker=Draft202012Validator.FORMAT_CHECKER)
        CompiledSchema.compilations += 1

    def is_valid(self, instance: Any) -> bool:
        """The yes/no answer, from the compiled Rust validator."""
        return self.fast.is_valid(instance)

    def errors(self, instance: Any) -> list[Violation]:
        """Every violation as (path, message), sorted by path; empty when valid."""
        if self.fast.is_valid(instance):
            return []
        found: list[Violation] = [(list(e.absolute_path), e.message) for e in self.full.iter_errors(instance)]
        if not found:
            # The two disagree (jsonschema's "email" format only looks for an "@"): the fast
            # validator decides, so let it name the violations too.
            log.warning("jsonschema found no error where jsonschema_rs did; using the latter's")
            found = [(list(e.instance_path), e.message) for e in self.fast.iter_errors(instance)]
        return sorted(found, key=lambda item: [str(p) for p in item[0]])


def json_pointer(path: list[str | int]) -> str:
    """RFC 6901 pointer for a path into a JSON document ('' is the root)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
