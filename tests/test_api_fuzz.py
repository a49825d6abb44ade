"""Schemathesis against /api/v1/openapi.json, authenticated: no 5xx and every answer matches its documented schema.

FUZZ_EXAMPLES sets the examples per operation (200 by default, which is what CI runs).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import _make_app, make_user

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def fuzz_app(tmp_path, database_url, clock):
    # on SQLite and PostgreSQL (their integer ranges differ); generous limits: the fuzzer sends hundreds of
    # writes a minute, and 429 is not what is under test here
    app = _make_app(
        tmp_path,
        database_url,
        clock,
        RATE_LIMIT_WRITES="100000 per minute",
        RATE_LIMIT_DEFAULT="100000 per minute",
        RATE_LIMIT_ANONYMOUS_PLAN="100000 per minute",
        PROPAGATE_EXCEPTIONS=False,
    )
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def fuzz_token(fuzz_app):
    token = make_user(fuzz_app, "fuzzer")
    client = fuzz_app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    # something to find: an asset and a job, so reads and cancels reach their handlers
    client.post("/api/v1/assets", json={"name": "rack", "region_id": 14, "max_power_kw": 100})
    client.post("/api/v1/jobs", json={"name": "seed", "duration_minutes": 60, "power_kw": 5, "regions": ["14"]})
    return token


@pytest.fixture
def fuzz_schema(fuzz_app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_matches_its_schema(case, fuzz_token):
    case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_token}"}, checks=CHECKS)
