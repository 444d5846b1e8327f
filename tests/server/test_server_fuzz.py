"""Schema fuzzing of the OpenAPI spec: no request the schema allows may cause a 5xx.

Driven through schemathesis' Python API (its pytest loader does not run on
pytest 9), one bounded hypothesis run per operation, on the shared server, every
operation included: the admin endpoints with the admin key (runtime corrections load
only from under the server's corrections root, so no fuzzed path reaches anything else).
"""

from __future__ import annotations

import pytest
import schemathesis
from server_helpers import ADMIN_KEY, API_KEYS
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.slow

EXAMPLES = 20
ADMIN_PATHS = ("/v1/corrections",)


def _fuzz(operation) -> None:
    key = ADMIN_KEY if operation.path.startswith(ADMIN_PATHS) else API_KEYS[0]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=[not_a_server_error], timeout=120)

    run()


def test_no_server_errors(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/corrections", "/v1/corrections/{name}",
            "/ui/api/variants", "/ui/api/toxicity"} <= paths
    for operation in operations:
        _fuzz(operation)
