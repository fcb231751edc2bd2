"""The fast validator (jsonschema_rs) and the reference (jsonschema) agree on every schema of the app."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from schema_strategies import documents
from support import make_test_config
from validation_app import PREFIX, build_sample_app

from server.app import api_layers, create_app
from server.routing.meta import schemas_of as request_schemas
from server.routing.openapi import route_operations
from server.routing.schemas import CompiledSchema
from server.routing.versions import describe_routes


def app_schemas() -> list[tuple[str, CompiledSchema]]:
    """Every schema stamped on a route of the app (plus the test sub-app), once each."""
    config = make_test_config(database="unused.db", redis_url="redis://127.0.0.1:9/0")
    app = create_app(config)
    app.add_subapp(PREFIX, build_sample_app(api_layers(config)))
    found: dict[int, tuple[str, CompiledSchema]] = {}
    for route in describe_routes(app):
        for method, handler in route_operations(route):
            for kind, compiled in request_schemas(handler).items():
                found.setdefault(id(compiled.schema), (f"{method} {route.path} {kind}", compiled))
    return list(found.values())


SCHEMAS = app_schemas()


def test_the_app_has_schemas_of_every_kind():
    kinds = {label.rsplit(" ", 1)[1] for label, _ in SCHEMAS}
    assert kinds == {"body", "query", "path"}
    assert any(" /api/v1/bar " in label for label, _ in SCHEMAS)


@pytest.mark.parametrize("compiled", [c for _, c in SCHEMAS], ids=[label for label, _ in SCHEMAS])
def test_fast_and_full_validators_agree(compiled):
    seen = {True: 0, False: 0}

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(documents(compiled.schema))
    def check(document):
        fast = compiled.fast.is_valid(document)
        assert fast == compiled.full.is_valid(document), document
        errors = compiled.errors(document)
        assert bool(errors) == (not fast), document
        # Each error's path leads into the document.
        for path, message in errors:
            node = document
            for part in path:
                node = node[part]
            assert message
        seen[fast] += 1

    check()
    assert seen[True] > 10 and seen[False] > 10, seen
