"""Every SDK exception class maps into tierwise's error tree; messages carry no secrets."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from types import ModuleType

import anthropic
import httpx2
import openai
import pytest

from tierwise.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)
from tierwise.providers.errors_map import (
    lookup,
    map_error,
    missing_key,
    parse_retry_after,
    redact,
    sdk_root,
)

SDKS: dict[str, ModuleType] = {"anthropic": anthropic, "openai": openai}


def _import_everything(pkg: ModuleType) -> None:
    """Import every module of an SDK (but its generated types/resources) to load all classes."""
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".", onerror=lambda _: None):
        if ".types" in info.name or ".resources" in info.name:
            continue
        try:
            importlib.import_module(info.name)
        except Exception:  # optional extras (aiohttp, websockets, mcp) are not installed
            continue


def _subclasses(root: type[BaseException]) -> set[type[BaseException]]:
    seen: set[type[BaseException]] = set()
    stack = [root]
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.add(cls)
            stack.extend(cls.__subclasses__())
    return seen


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_every_sdk_exception_class_is_mapped(sdk: str) -> None:
    """An SDK upgrade that adds an exception class directly under its root fails here."""
    _import_everything(SDKS[sdk])
    root = sdk_root(sdk)
    classes = _subclasses(root) | {
        v for v in vars(SDKS[sdk]).values() if isinstance(v, type) and issubclass(v, root)
    }
    assert len(classes) > 15
    unmapped = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if c is not root and lookup(sdk, c)[0] is root
    )
    assert unmapped == [], f"map these {sdk} exceptions in tierwise.providers.errors_map"
    for cls in classes:
        assert issubclass(lookup(sdk, cls)[1], ProviderError)


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_base_exception_classes_map_by_meaning(sdk: str) -> None:
    e = SDKS[sdk]
    expected = {
        e.APITimeoutError: ProviderTimeoutError,
        e.APIConnectionError: ProviderConnectionError,
        e.APIResponseValidationError: BadResponseError,
        e.RateLimitError: RateLimitedError,
        e.AuthenticationError: AuthenticationError,
        e.PermissionDeniedError: AuthenticationError,
        e.BadRequestError: BadRequestError,
        e.NotFoundError: BadRequestError,
        e.UnprocessableEntityError: BadRequestError,
        e.InternalServerError: ServerError,
    }
    for cls, target in expected.items():
        assert lookup(sdk, cls)[1] is target, cls


def test_anthropic_error_code_subclasses_inherit_their_status_meaning() -> None:
    assert lookup("anthropic", anthropic.OverloadedError)[1] is ServerError
    assert lookup("anthropic", anthropic.ContractSpendLimitReachedError)[1] is RateLimitedError
    assert lookup("anthropic", anthropic.SandboxEgressRestrictedError)[1] is AuthenticationError
    assert lookup("anthropic", anthropic.CMEKKeyUnreachableError)[1] is ServerError


_CLIENTS: dict[str, anthropic.Anthropic | openai.OpenAI] = {}


@pytest.fixture(scope="module", autouse=True)
def _sdk_clients() -> Iterator[None]:
    """One client per SDK, only to build its exceptions the way the SDK does."""
    _CLIENTS["anthropic"] = anthropic.Anthropic(api_key="x", base_url="http://upstream.test")
    _CLIENTS["openai"] = openai.OpenAI(api_key="x", base_url="http://upstream.test/v1")
    yield
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


def _status_error(
    sdk: str, status: int, body: dict[str, object], headers: dict[str, str]
) -> Exception:
    """The exception the SDK itself builds for an HTTP error response."""
    request = httpx2.Request("POST", "http://upstream.test/v1/messages")
    response = httpx2.Response(status, json=body, headers=headers, request=request)
    return _CLIENTS[sdk]._make_status_error_from_response(response)


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, BadRequestError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (408, ProviderTimeoutError),
        (409, BadRequestError),
        (413, BadRequestError),
        (418, BadRequestError),
        (422, BadRequestError),
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (529, ServerError),
    ],
)
def test_status_codes_map_to_the_tree(sdk: str, status: int, expected: type[ProviderError]) -> None:
    body = {"type": "error", "error": {"type": "some_error", "message": "went wrong"}}
    exc = _status_error(sdk, status, body, {"request-id": "req_1", "x-request-id": "req_1"})
    mapped = map_error(exc, sdk=sdk, provider=sdk, model="m1")
    assert type(mapped) is expected
    assert mapped.status == status
    assert mapped.provider == sdk and mapped.model == "m1"
    assert mapped.request_id == "req_1"
    assert f"HTTP {status}" in str(mapped)
    assert "went wrong" in str(mapped)
    assert mapped.retryable == (expected in (RateLimitedError, ServerError, ProviderTimeoutError))


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_rate_limit_carries_retry_after_seconds(sdk: str) -> None:
    exc = _status_error(sdk, 429, {"error": {"message": "slow down"}}, {"retry-after": "12"})
    mapped = map_error(exc, sdk=sdk, provider=sdk, model="m")
    assert isinstance(mapped, RateLimitedError)
    assert mapped.retry_after == 12


def test_retry_after_forms() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2029, 12, 31, tzinfo=UTC), usegmt=True)
    clock = now.timestamp
    assert parse_retry_after({"retry-after": "3"}, clock) == 3
    assert parse_retry_after({"retry-after": "1.5"}, clock) == 1.5
    assert parse_retry_after({"retry-after": later}, clock) == 30
    assert parse_retry_after({"retry-after": earlier}, clock) == 0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, clock) == 0.25
    assert parse_retry_after({"retry-after": "soon"}, clock) is None
    assert parse_retry_after({}, clock) is None
    assert parse_retry_after(None, clock) is None


def test_transport_and_body_errors_map() -> None:
    request = httpx2.Request("GET", "http://x")
    cases: list[tuple[BaseException, type[ProviderError]]] = [
        (httpx2.ReadTimeout("slow", request=request), ProviderTimeoutError),
        (httpx2.ConnectError("refused", request=request), ProviderConnectionError),
        (httpx2.RemoteProtocolError("peer closed", request=request), BadResponseError),
        (json.JSONDecodeError("Expecting value", "{", 1), BadResponseError),
    ]
    for exc, expected in cases:
        assert type(map_error(exc, sdk="anthropic", provider="anthropic", model="m")) is expected


def test_connection_error_caused_by_a_cut_body_is_a_bad_response() -> None:
    request = httpx2.Request("POST", "http://x")
    try:
        try:
            raise httpx2.RemoteProtocolError("incomplete chunked read", request=request)
        except httpx2.RemoteProtocolError as cause:
            raise openai.APIConnectionError(request=request) from cause
    except openai.APIConnectionError as exc:
        mapped = map_error(exc, sdk="openai", provider="openai", model="m")
    assert isinstance(mapped, BadResponseError)
    assert "cut short" in str(mapped)


def test_messages_never_carry_keys() -> None:
    body = {"error": {"message": "Incorrect API key provided: sk-proj-abcdef123456. Find yours."}}
    exc = _status_error("openai", 401, body, {})
    mapped = map_error(
        exc, sdk="openai", provider="openai", model="m", secrets=("sk-proj-abcdef123456",)
    )
    assert isinstance(mapped, AuthenticationError)
    assert "abcdef123456" not in str(mapped)
    assert "[redacted]" in str(mapped)
    assert redact("key sk-ant-api03-XYZxyz_0123 and my-own-secret", ("my-own-secret",)) == (
        "key [redacted] and [redacted]"
    )


def test_missing_key_names_the_variable() -> None:
    err = missing_key("anthropic", "TEAM_ANTHROPIC_KEY")
    assert isinstance(err, AuthenticationError)
    assert "TEAM_ANTHROPIC_KEY" in str(err)
    assert not err.retryable


def test_non_sdk_exceptions_are_not_mapped() -> None:
    with pytest.raises(KeyError):
        map_error(ZeroDivisionError(), sdk="openai", provider="openai", model="m")
