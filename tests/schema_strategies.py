"""Hypothesis strategies for JSON documents: valid for a schema, near misses, and anything at all."""

# hypothesis-jsonschema would generate the valid ones, but its object generation relies on
# Hypothesis internals that have changed (0.23.1 fails on Hypothesis 6.170: `many.more`), so this
# module generates from the keywords schemas commonly use. Valid documents are filtered through
# the reference validator: a keyword it does not model costs examples, never correctness.

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator

# Any JSON value (finite numbers: NaN and Infinity are not JSON).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

FORMATS: dict[str, st.SearchStrategy[str]] = {
    "date": st.dates().map(lambda d: d.isoformat()),
    "date-time": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    "time": st.times().map(lambda t: t.replace(microsecond=0).isoformat() + "Z"),
    "uuid": st.uuids().map(str),
    "email": st.from_regex(r"[a-z0-9]{1,12}@[a-z]{1,10}\.(com|org|net)", fullmatch=True),
    "ipv4": st.ip_addresses(v=4).map(str),
    "ipv6": st.ip_addresses(v=6).map(str),
    "hostname": st.from_regex(r"[a-z][a-z0-9]{0,9}(\.[a-z][a-z0-9]{0,9}){0,3}", fullmatch=True),
    "uri": st.from_regex(r"https://[a-z]{1,10}\.example/[a-z0-9/]{0,12}", fullmatch=True),
}

JSON_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else []:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _bound(
    schema: dict[str, Any], low: str, high: str, exclusive_low: str, exclusive_high: str, step: float
) -> tuple[float | None, float | None]:
    lo = schema.get(low)
    hi = schema.get(high)
    if exclusive_low in schema:
        lo = schema[exclusive_low] + step if lo is None else max(lo, schema[exclusive_low] + step)
    if exclusive_high in schema:
        hi = schema[exclusive_high] - step if hi is None else min(hi, schema[exclusive_high] - step)
    return lo, hi


def _of_type(kind: str, schema: dict[str, Any], root: Any) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo, hi = _bound(schema, "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", 1)
        return st.integers(
            min_value=None if lo is None else math.ceil(lo), max_value=None if hi is None else math.floor(hi)
        )
    if kind == "number":
        lo, hi = _bound(schema, "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", 1e-9)
        return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False) | st.integers(
            min_value=None if lo is None else math.ceil(lo), max_value=None if hi is None else math.floor(hi)
        )
    if kind == "string":
        if schema.get("format") in FORMATS:
            return FORMATS[schema["format"]]
        if "pattern" in schema:
            return st.from_regex(schema["pattern"])
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=schema.get("maxLength", low + 16))
    if kind == "array":
        low = schema.get("minItems", 0)
        items = valid_for(schema.get("items", {}), root)
        return st.lists(
            items,
            min_size=low,
            max_size=schema.get("maxItems", low + 4),
            unique_by=(lambda x: repr(x)) if schema.get("uniqueItems") else None,
        )
    properties = schema.get("properties", {})
    required = [name for name in schema.get("required", [])]
    fixed = {name: valid_for(properties.get(name, {}), root) for name in required}
    optional = {name: valid_for(sub, root) for name, sub in properties.items() if name not in fixed}
    objects = st.fixed_dictionaries(fixed, optional=optional)
    extra = schema.get("additionalProperties", True)
    if extra is not False and not schema.get("patternProperties"):
        others = st.dictionaries(
            st.text(max_size=6).filter(lambda k: k not in properties),
            valid_for(extra if isinstance(extra, dict) else {}, root),
            max_size=2,
        )
        objects = st.builds(lambda a, b: {**b, **a}, objects, others)
    return objects


def valid_for(schema: Any, root: Any) -> st.SearchStrategy[Any]:
    """Documents meant to be valid for `schema` (a sub-schema of `root`); not filtered."""
    if schema is True or schema == {}:
        return json_values
    if schema is False:
        return st.nothing()
    if "$ref" in schema:
        return valid_for(_resolve(schema["$ref"], root), root)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            return st.one_of([valid_for(sub, root) for sub in schema[keyword]])
    kinds = schema.get("type")
    if kinds is None:
        if "properties" in schema or "required" in schema:
            kinds = "object"
        elif "items" in schema:
            kinds = "array"
        else:
            kinds = list(JSON_TYPES)
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return st.one_of([_of_type(kind, schema, root) for kind in kinds])


def valid_documents(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Documents valid for `schema`, as the reference validator judges."""
    reference = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return valid_for(schema, schema).filter(reference.is_valid)


def _locations(doc: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _locations(value, (*path, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _locations(value, (*path, index))
    return found


def _replace(doc: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = _replace(copy[head], rest, value, delete)
    return copy


@st.composite
def near_misses(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A valid document with one member deleted or replaced by any JSON value: often invalid."""
    doc = draw(valid_for(schema, schema))
    path = draw(st.sampled_from(_locations(doc)))
    delete = bool(path) and draw(st.booleans())
    return _replace(doc, path, None if delete else draw(json_values), delete)


def documents(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid documents, near misses and arbitrary JSON, in about equal parts."""
    return st.one_of(valid_documents(schema), near_misses(schema), json_values)
