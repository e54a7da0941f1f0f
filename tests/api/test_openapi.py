"""Schemathesis against the live OpenAPI schema: generated requests (valid and invalid) never
get a 5xx, and every answer matches the documented status codes, content types and schemas.

Schemathesis's pytest plugin cannot take a schema from a fixture under pytest 9, so each
operation's Hypothesis strategy is driven here directly, with a bounded number of examples."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import ApiServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(api_server: ApiServer, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {api_server.token('admin', uid='schemathesis')}"}
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 30
    tested = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=api_server.base_url, headers=headers, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            # Nothing to negate: the operation takes no parameters and no body.
            assert mode == GenerationMode.NEGATIVE, operation.label
            continue
        tested.append(operation.label)
    assert len(tested) >= 25, tested
