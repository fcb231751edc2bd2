"""Violations of a JSON Schema listed lazily and cheaply: at most N, without walking the rest.

jsonschema-rs decides valid/invalid fast, but its Python binding collects *every* violation
before `iter_errors` yields the first (measured with jsonschema-rs 0.60: 0.7 s for a 50,000-item
array of wrong items, 12 s for 500,000), so it cannot list a few. jsonschema's `iter_errors` is a
lazy generator, but walks valid parts in Python at about 20 us a node (2.3 s to reach one bad
item after 100,000 good ones). The validator built here is jsonschema's, with every keyword that
descends into a part of the instance (items, properties, anyOf, ...) asking jsonschema-rs first
whether that part is valid: valid parts are skipped in Rust, invalid ones are walked in Python
and yield their violations one by one. See docs/decisions.md, "Bounded validation".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import extend

# Keywords whose implementation descends into parts of the instance or tests subschemas.
_DESCENDING = (
    "items",
    "prefixItems",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "dependentSchemas",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_REFERENCES = ('"$ref"', '"$dynamicRef"', '"$recursiveRef"')


class FastChecks:
    """jsonschema-rs validators of subschemas, compiled on first use and kept (the schema lives
    as long as the route). A subschema with a reference is not compiled on its own (its target
    lies outside it): parts under it are walked in Python."""

    __slots__ = ("_compiled",)

    def __init__(self) -> None:
        self._compiled: dict[int, tuple[Any, Any]] = {}

    def _validator(self, schema: Any) -> Any:
        found = self._compiled.get(id(schema))
        if found is not None and found[0] is schema:
            return found[1]
        validator = None
        if isinstance(schema, Mapping):
            try:
                text = json.dumps(schema)
            except (TypeError, ValueError):
                text = '"$ref"'
            if not any(ref in text for ref in _REFERENCES):
                try:
                    validator = jsonschema_rs.Draft202012Validator(dict(schema), validate_formats=True, offline=True)
                except Exception:  # a subschema jsonschema-rs cannot take alone: walk it in Python
                    validator = None
        self._compiled[id(schema)] = (schema, validator)  # the schema is kept alive with its id
        return validator

    def validator(self, schema: Any) -> Any:
        """The compiled jsonschema-rs validator of `schema`, or None (a boolean or referencing one)."""
        return self._validator(schema)

    def valid(self, schema: Any, instance: Any) -> bool | None:
        """True or False when jsonschema-rs can tell, None when the part must be walked."""
        if schema is True:
            return True
        if schema is False:
            return False
        validator = self._validator(schema)
        return None if validator is None else bool(validator.is_valid(instance))


class _Pruning:
    """Stands in for the validator a keyword function receives: skips parts known valid."""

    __slots__ = ("_checks", "_validator")

    def __init__(self, validator: Any, checks: FastChecks) -> None:
        self._validator = validator
        self._checks = checks

    def descend(self, instance: Any, schema: Any, *args: Any, **kwargs: Any) -> Iterator[ValidationError]:
        if self._checks.valid(schema, instance) is True:
            return iter(())
        errors: Iterator[ValidationError] = self._validator.descend(instance, schema, *args, **kwargs)
        return errors

    def evolve(self, **changes: Any) -> _Pruning:
        return _Pruning(self._validator.evolve(**changes), self._checks)

    def is_valid(self, instance: Any, _schema: Any = None) -> bool:
        schema = self._validator.schema if _schema is None else _schema
        known = self._checks.valid(schema, instance)
        return self._validator.is_valid(instance, _schema) if known is None else known

    def __getattr__(self, name: str) -> Any:
        return getattr(self._validator, name)


def _pruned(keyword: Callable[..., Any], checks: FastChecks) -> Callable[..., Any]:
    def run(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        return keyword(_Pruning(validator, checks), value, instance, schema)

    return run


def _items(checks: FastChecks) -> Callable[..., Any]:
    """`items` over a long array: one jsonschema-rs call per element, Python only for bad ones."""
    keyword = Draft202012Validator.VALIDATORS["items"]

    def run(validator: Any, items: Any, instance: Any, schema: Any) -> Any:
        fast = checks.validator(items)
        if fast is None or not validator.is_type(instance, "array"):
            return keyword(_Pruning(validator, checks), items, instance, schema)
        return _bad_items(validator, fast, items, instance, len(schema.get("prefixItems", ())))

    return run


def _bad_items(validator: Any, fast: Any, items: Any, instance: list[Any], start: int) -> Iterator[ValidationError]:
    is_valid = fast.is_valid
    for index in range(start, len(instance)):
        if not is_valid(instance[index]):
            yield from validator.descend(instance=instance[index], schema=items, path=index)


def lazy_validator(schema: dict[str, Any]) -> Any:
    """A Draft 2020-12 validator (format checking on) whose `iter_errors` yields violations
    lazily, skipping the parts of the instance jsonschema-rs finds valid."""
    checks = FastChecks()
    base = Draft202012Validator.VALIDATORS
    overrides = {name: _pruned(base[name], checks) for name in _DESCENDING if name in base}
    overrides["items"] = _items(checks)
    # jsonschema's `extend` is untyped; the class it makes is a Draft 2020-12 validator.
    cls: Any = extend(Draft202012Validator, overrides)  # type: ignore[no-untyped-call]
    return cls(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
