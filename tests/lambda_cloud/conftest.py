"""Fixtures for the Lambda tests: a stand-in API per test, and an OpenAPI check of every exchange with it.

Every request the stand-in receives (from this process, or from a ``gpuprov``
subprocess) and every answer it returns is validated against Lambda's own OpenAPI
document at teardown, so neither the client nor the stand-in can drift from the
real API. Answers the document does not list (429, 5xx: faults we inject) must
still be the documented error envelope.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from gpuprov.testing.lambda_api import CLOSED_GLOBAL_RULES, LambdaStandIn, RecordedRequest
from tests.conftest import need

# Lambda's own OpenAPI document, version 1.8.3 (the API docs at https://docs.lambda.ai/api/cloud), kept beside
# the tests so every exchange with the stand-in is checked against the real contract.
SPEC = Path(__file__).with_name("lambda-cloud-openapi-1.8.3.json")
SERVER = "https://cloud.lambda.ai"  # the document's server; paths are what is checked
STANDIN_KEY = "standin-test-key"


def busiest_window(times: list[float], window: float) -> int:
    """The most requests that arrived within any ``window`` seconds."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))


@cache
def _openapi():  # type: ignore[no-untyped-def]
    from openapi_core import OpenAPI

    return OpenAPI.from_file_path(str(SPEC))


def conformance_errors(records: list[RecordedRequest]) -> list[str]:
    """What in ``records`` breaks Lambda's OpenAPI document (empty: all conform)."""
    from openapi_core.templating.responses.exceptions import ResponseNotFound
    from openapi_core.testing import MockRequest, MockResponse

    need(SPEC.exists(), f"Lambda's OpenAPI document is expected at {SPEC} (the shared/ folder beside the repo)")
    api = _openapi()
    problems = []
    for rec in records:
        where = f"{rec.method} {rec.path}"
        request = MockRequest(SERVER, rec.method.lower(), rec.path, args={k: v[0] for k, v in parse_qs(rec.query).items()},
                              headers={"Authorization": rec.headers.get("Authorization", "")},
                              data=rec.body or None, content_type="application/json")
        try:
            api.validate_request(request)
        except Exception as err:  # openapi-core raises several unrelated types; each is a finding  # noqa: BLE001
            problems.append(f"request {where}: {err}")
            continue
        if rec.status is None:  # connection dropped on purpose: no answer to check
            continue
        try:
            api.validate_response(request, MockResponse(rec.answer, rec.status))
        except ResponseNotFound:
            body = json.loads(rec.answer)
            if not (isinstance(body.get("error"), dict) and {"code", "message"} <= set(body["error"])):
                problems.append(f"answer {rec.status} to {where} is not an error envelope: {body}")
        except Exception as err:  # noqa: BLE001
            problems.append(f"answer {rec.status} to {where}: {err}")
    return problems


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaStandIn]:
    """A started stand-in with quick boots; LAMBDA_API_URL/KEY point at it; rate limits scaled by 0.02.

    At teardown every exchange it saw must conform to the OpenAPI document. Its account's global ruleset has
    the SSH-from-anywhere rule removed, as the README asks of an account used with gpuprov (a test of a new
    account's ruleset sets NEW_ACCOUNT_GLOBAL_RULES).
    """
    api = LambdaStandIn(boot_seconds=0.3, terminate_seconds=0.2, api_key=STANDIN_KEY).start()
    api.set_global_rules(list(CLOSED_GLOBAL_RULES))
    monkeypatch.setenv("LAMBDA_API_URL", api.url)
    monkeypatch.setenv("LAMBDA_API_KEY", STANDIN_KEY)
    monkeypatch.setenv("GPUPROV_LAMBDA_RATE_SCALE", "0.02")
    try:
        yield api
    finally:
        api.stop()
    problems = conformance_errors(api.requests())
    assert not problems, "exchanges that break Lambda's OpenAPI document:\n" + "\n".join(problems)
