"""A json_schema validator fetches a remote $ref only from hosts its allow_hosts names.

The "remote" hosts are real HTTP servers on loopback that record every request they get, so
each test can say whether the network was used — not only what the verdict was.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tierwise.cascade.validators import StaticContext, build_validator
from tierwise.errors import PolicyError
from tierwise.policy import check_policy, loads_policy
from tierwise.task import Task

HEAD = """\
version = 1
[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"
[[tiers]]
name = "strong"
provider = "anthropic"
model = "claude-opus-4-6"
[[rules]]
when = { kind = "extract" }
tier = "cheap"
"""

CONTEXT = StaticContext(Task.create("extract", "x"), None, "cheap")


class SchemaHost:
    """A loopback HTTP server serving JSON documents by path and recording each request."""

    def __init__(self, documents: dict[str, Any]) -> None:
        self.documents = documents
        self.requests: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append(self.path)
                document = host.documents.get(self.path)
                body = json.dumps(document).encode()
                self.send_response(200 if document is not None else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def remote() -> Iterator[SchemaHost]:
    host = SchemaHost({"/total.json": {"type": "number", "minimum": 0}})
    yield host
    host.close()


def invoice_schema(ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["total"],
        "properties": {"total": {"$ref": ref}},
    }


def inline(value: Any) -> str:
    """*value* as a TOML inline value (JSON's strings and numbers are TOML's too)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    return json.dumps(value)


def toml_validator(schema: dict[str, Any], extra: str = "") -> str:
    return (
        HEAD
        + "[kinds.extract]\nvalidators = ['invoice']\n"
        + f"[validators.invoice]\ntype = 'json_schema'\n{extra}"
        + f"schema = {inline(schema)}\n"
    )


def test_a_remote_ref_to_a_host_not_allowed_is_a_policy_error_at_load(
    remote: SchemaHost,
) -> None:
    text = toml_validator(invoice_schema(remote.url("/total.json")))
    with pytest.raises(PolicyError) as info:
        loads_policy(text)
    (issue,) = info.value.issues
    assert issue.path == "validators.invoice.schema"
    assert issue.line == len(text.splitlines())  # the schema is the last line
    assert "$.properties.total.$ref" in issue.message
    assert remote.url("/total.json") in issue.message
    assert "allow_hosts" in issue.message
    assert remote.requests == []  # the network was never touched


def test_build_validator_refuses_it_too_without_fetching(remote: SchemaHost) -> None:
    spec = {"type": "json_schema", "schema": invoice_schema(remote.url("/total.json"))}
    with pytest.raises(PolicyError) as info:
        build_validator(spec, base_dir=Path("."), name="invoice")
    assert info.value.issues[0].path == "validators.invoice.schema"
    assert remote.requests == []


def test_a_schema_file_with_a_remote_ref_is_refused_at_load(
    remote: SchemaHost, tmp_path: Path
) -> None:
    (tmp_path / "invoice.json").write_text(json.dumps(invoice_schema(remote.url("/total.json"))))
    text = HEAD + "[validators.invoice]\ntype = 'json_schema'\nschema = 'invoice.json'\n"
    with pytest.raises(PolicyError) as info:
        loads_policy(text, base_dir=tmp_path)
    assert "allow_hosts" in info.value.issues[0].message
    assert remote.requests == []


def test_file_urls_are_never_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "string"}')
    text = toml_validator(invoice_schema(secret.as_uri()), "allow_hosts = ['localhost']\n")
    with pytest.raises(PolicyError) as info:
        loads_policy(text)
    assert "only http(s) references are fetched" in info.value.issues[0].message


def test_an_allowed_host_is_fetched_once_and_used(remote: SchemaHost) -> None:
    text = toml_validator(
        invoice_schema(remote.url("/total.json")), f"allow_hosts = ['127.0.0.1:{remote.port}']\n"
    )
    policy = loads_policy(text)
    assert check_policy(policy) == []
    assert remote.requests == []  # loading and checking fetch nothing
    spec = policy.model.validators["invoice"]
    validator = build_validator(spec, base_dir=Path("."), name="invoice")
    assert validator.check('{"total": 10}', CONTEXT).ok
    verdict = validator.check('{"total": -1}', CONTEXT)
    assert not verdict.ok
    assert "$.total" in verdict.reason
    assert remote.requests == ["/total.json"]  # fetched once, then cached


async def test_an_allowed_host_is_fetched_off_the_event_loop(remote: SchemaHost) -> None:
    spec = {
        "type": "json_schema",
        "schema": invoice_schema(remote.url("/total.json")),
        "allow_hosts": ["127.0.0.1"],
    }
    validator = build_validator(spec, base_dir=Path("."), name="invoice")
    assert (await validator.acheck('{"total": 3}', CONTEXT)).ok
    assert remote.requests == ["/total.json"]


def test_a_fetched_document_pointing_to_another_host_fails_the_verdict(
    remote: SchemaHost,
) -> None:
    other = SchemaHost({"/number.json": {"type": "number"}})
    try:
        # Same server address, different host name: only 127.0.0.1 is allowed.
        remote.documents["/total.json"] = {"$ref": other.url("/number.json", host="localhost")}
        spec = {
            "type": "json_schema",
            "schema": invoice_schema(remote.url("/total.json")),
            "allow_hosts": ["127.0.0.1"],
        }
        validator = build_validator(spec, base_dir=Path("."), name="invoice")
        verdict = validator.check('{"total": 10}', CONTEXT)
        assert not verdict.ok
        assert "refused" in verdict.reason
        assert other.url("/number.json", host="localhost") in verdict.reason
        assert remote.requests == ["/total.json"]
        assert other.requests == []
    finally:
        other.close()


def test_an_http_error_from_an_allowed_host_fails_the_verdict(remote: SchemaHost) -> None:
    spec = {
        "type": "json_schema",
        "schema": invoice_schema(remote.url("/missing.json")),
        "allow_hosts": [f"127.0.0.1:{remote.port}"],
    }
    validator = build_validator(spec, base_dir=Path("."), name="invoice")
    verdict = validator.check('{"total": 10}', CONTEXT)
    assert not verdict.ok
    assert "HTTP 404" in verdict.reason


def test_local_refs_and_meta_schemas_are_not_remote() -> None:
    schema = {
        "$id": "https://schemas.example.com/invoice.json",
        "$defs": {"money": {"type": "number"}},
        "properties": {
            "total": {"$ref": "#/$defs/money"},
            "tax": {"$ref": "https://schemas.example.com/invoice.json#/$defs/money"},
            "meta": {"$ref": "https://json-schema.org/draft/2020-12/schema"},
        },
    }
    policy = loads_policy(toml_validator(schema))
    validator = build_validator(policy.model.validators["invoice"], base_dir=Path("."))
    assert validator.check('{"total": 1, "tax": 2}', CONTEXT).ok
    assert not validator.check('{"total": "x"}', CONTEXT).ok
