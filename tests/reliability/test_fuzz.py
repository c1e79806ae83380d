"""Property-based fuzzing of every operation of the real server, generated from its own OpenAPI schema.

schemathesis builds valid and invalid requests for each operation (admin included, with the token) and
hypothesis drives them, derandomized and bounded: the same cases every run, about a minute on two cores.
Every answer must be no 5xx, a documented status and content type, headers and body matching the schema,
and for 4xx a JSON `detail` without a trace or a path.

(schemathesis' own pytest plugin is not used: its lazy-schema wrapper relies on pytest internals that
pytest 9 removed, so the strategies are driven directly.)
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.oip.models import MODELS
from loadtest.server import ServerProcess
from model.registry import Registry
from tests.builders import figures
from tests.builders.checks import assert_clean_error_body, assert_log_has_no_traceback
from tests.builders.images import digit_png
from tests.builders.servers import AUTH
from training.data import load_bundled

pytestmark = pytest.mark.timeout(240)

MAX_EXAMPLES = 150  # per operation and mode (valid / invalid requests): about half a minute
# Per Open Inference Protocol inference pass: its generated bodies are tensors, slower to make and serve.
PROTOCOL_INFER_EXAMPLES = 30
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


DIGIT_PNG = digit_png(load_bundled().images[0])  # a real MNIST digit


def error_has_a_clean_detail(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """Every 4xx (and 5xx, were there any) is JSON with a `detail` (/v2: the protocol's `error`) and no
    stack trace or path."""
    if response.status_code >= 400:
        key = "error" if case.path.startswith("/v2") else "detail"
        assert_clean_error_body(response.status_code, response.content, key=key)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    session: requests.Session,
    statuses: Counter[int],
    **fixed: dict[str, str],
) -> int:
    """Run up to MAX_EXAMPLES generated cases of one operation (fewer for /v2 inference); returns the count.

    In half the multipart cases the generated `file` is swapped for a real digit, so the success path
    (and its response schema) is fuzzed too, not only the refusal of random bytes."""
    ran = 0
    examples = (
        PROTOCOL_INFER_EXAMPLES
        if operation.path.startswith("/v2/models/") and (operation.path.endswith("/infer"))
        else MAX_EXAMPLES
    )

    @given(case=operation.as_strategy(generation_mode=mode, **fixed), real_digit=st.booleans())
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case, real_digit: bool) -> None:
        nonlocal ran
        ran += 1
        if real_digit and isinstance(case.body, dict) and "file" in case.body:
            case.body["file"] = DIGIT_PNG
        response = case.call(session=session, headers=AUTH, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, additional_checks=[error_has_a_clean_detail])

    with contextlib.suppress(Unsatisfiable):  # nothing invalid to generate (no parameters)
        run()
    return ran


def passes(operation: schemathesis.APIOperation, versions: list[str]) -> list[tuple[GenerationMode, dict]]:
    """(mode, fixed parameters) runs of an operation: valid and invalid requests, and for an operation
    on a version also valid requests naming each real version (random names are all 404); an operation
    on an Open Inference Protocol model: invalid requests, and valid ones naming each real model."""
    runs: list[tuple[GenerationMode, dict]] = [(mode, {}) for mode in MODES]
    if "{name}" in operation.path:  # an Open Inference Protocol model: random names are all 404
        infer = operation.path.endswith("/infer")
        runs = [(GenerationMode.NEGATIVE, {})] if infer else []  # only a body can be made invalid
        active = {"version": versions[-1]} if "{version}" in operation.path else {}
        models = list(MODELS)[:1] if active and infer else MODELS
        runs += [(GenerationMode.POSITIVE, {"path_parameters": {"name": m, **active}}) for m in models]
    elif "{version}" in operation.path:
        runs += [(GenerationMode.POSITIVE, {"path_parameters": {"version": v}}) for v in versions]
    return runs


def test_every_operation_answers_generated_requests_as_documented(
    main_server: ServerProcess, two_versions: Path
) -> None:
    schema = schemathesis.openapi.from_url(main_server.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /generate",
        "POST /encode",
        "POST /reconstruct",
        "POST /admin/models/{version}/promote",
        "POST /v2/models/{name}/infer",
        "POST /v2/models/{name}/versions/{version}/infer",
    }
    versions = sorted(Registry(two_versions).version_names(), reverse=True)  # the active one last
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    cases = 0
    with requests.Session() as session:
        for operation in operations:
            for mode, fixed in passes(operation, versions):
                try:
                    cases += fuzz(operation, mode, session, statuses, **fixed)
                except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
                    failures.append(f"{operation.label} [{mode.value} {fixed}]: {exc}")
    figures.record("fuzz operations", len(operations))
    figures.record("fuzz cases run", cases)
    figures.record("fuzz answers by status", dict(sorted(statuses.items())))
    assert not failures, "\n\n".join(failures)
    assert cases >= 10 * len(operations)  # the fuzzer really ran
    assert statuses[200] > 0 and any(400 <= status < 500 for status in statuses)
    assert_log_has_no_traceback(main_server.log())
