"""schemathesis against the service's own OpenAPI schema: no 5xx, and every response matches the schema
(status codes, content types, bodies), including the JSON error bodies.

This test is about the HTTP layer (routing, validation, error mapping), so the engine is the stand-in
(tests/serve_support.py); real-engine runs are in test_serve_e2e.py. Examples are bounded so it stays
well under a minute on the 2-core machine.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from serve.app import create_app  # noqa: E402
from serve.settings import Settings  # noqa: E402
from tests.serve_support import StandInEngine  # noqa: E402

app = create_app(Settings(max_upload_mb=1, max_files=4), engine=StandInEngine())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api_conforms_to_its_schema(case):
    # positive_data_acceptance is left out on purpose: schema-valid bytes are rarely a decodable video and
    # value ranges live in AskOptions, so a schema-valid request may rightly be refused with 4xx.
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
