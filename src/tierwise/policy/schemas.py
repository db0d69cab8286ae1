"""JSON Schemas named by a policy: read, checked, and where their ``$ref`` s may lead.

A ``json_schema`` validator's schema is inline or a file next to the policy. A ``$ref`` to
another document would make ``jsonschema`` fetch it while validating a request — network access
decided by whoever wrote the schema. tierwise fetches nothing unless the validator's
``allow_hosts`` names the host: :func:`remote_refs` lists every reference that leaves the
document, and :func:`ref_issues` turns the ones not allowed into policy errors at load time. The
cascade's validator enforces the same rule at run time (a document fetched from an allowed host
may itself point elsewhere).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from tierwise.errors import PolicyError, PolicyIssue

__all__ = [
    "RemoteRef",
    "check_schema",
    "host_allowed",
    "read_schema",
    "ref_issues",
    "remote_refs",
]

_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
_FETCHED_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """A reference to a document outside the schema: where it is written and where it leads."""

    json_path: str  # e.g. "$.properties.address.$ref"
    uri: str  # resolved against the enclosing $id, without the fragment


def read_schema(schema: str | dict[str, Any], base_dir: Path, where: str) -> Any:
    """The schema document: *schema* itself, or the JSON file it names relative to *base_dir*.

    Raises:
        PolicyError: the file is missing, unreadable, not JSON, nested too deeply, or the
            document is neither an object nor a boolean.
    """
    document: Any = schema
    if isinstance(schema, str):
        file = base_dir / schema
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _error(where, f"schema file not found: {file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _error(where, f"cannot read schema file {file}: {exc}") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _error(
                where,
                f"schema file {file} is not JSON: {exc.msg} "
                f"at line {exc.lineno} column {exc.colno}",
            ) from None
        except RecursionError:
            raise _error(where, f"schema file {file} is nested too deeply") from None
    if not isinstance(document, dict | bool):
        raise _error(
            where, f"a JSON Schema is an object or a boolean, found {type(document).__name__}"
        )
    return document


def check_schema(document: Any, where: str) -> type[Any]:
    """Check *document* against its dialect's meta-schema; return the dialect's validator class.

    Raises:
        PolicyError: an unknown ``$schema``, or a schema its meta-schema rejects (with the path).
    """
    import warnings

    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls: type[Any] = validator_for(document)
    if caught and isinstance(document, dict):
        raise _error(where, f"unknown $schema {document.get('$schema')!r}")
    if isinstance(document, dict):  # true and false are valid schemas as they stand
        try:
            cls.check_schema(document)
        except SchemaError as exc:
            raise _error(where, f"invalid JSON Schema at {exc.json_path}: {exc.message}") from None
        except RecursionError:
            raise _error(where, "the JSON Schema is nested too deeply") from None
    return cls


def remote_refs(document: Any) -> list[RemoteRef]:
    """Every reference in *document* that resolves outside it (fragments and own ``$id`` s aside).

    Relative references resolve against the nearest enclosing ``$id``; references to the JSON
    Schema meta-schemas (which ``jsonschema`` ships) are not remote. The walk is iterative, so a
    deeply nested schema cannot exhaust the stack.
    """
    from jsonschema_specifications import REGISTRY as SPECIFICATIONS

    found: list[tuple[str, str]] = []
    local_ids: set[str] = set()
    stack: list[tuple[Any, str, str]] = [(document, "", "$")]
    while stack:
        node, base, path = stack.pop()
        if isinstance(node, dict):
            own_id = node.get("$id")
            if isinstance(own_id, str):
                base = urljoin(base, own_id) if base else own_id
                local_ids.add(urldefrag(base)[0])
            for key, value in node.items():
                if key in _REF_KEYS and isinstance(value, str):
                    found.append((f"{path}.{key}", urljoin(base, value) if base else value))
                elif key not in ("enum", "const", "examples", "default"):  # data, not schemas
                    stack.append((value, base, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((item, base, f"{path}[{i}]") for i, item in enumerate(node))
    out: list[RemoteRef] = []
    for json_path, target in found:
        uri = urldefrag(target)[0]
        if not uri or uri in local_ids or uri in SPECIFICATIONS:
            continue
        if urlsplit(uri).scheme:  # a relative name without a base cannot be fetched
            out.append(RemoteRef(json_path, uri))
    return sorted(out, key=lambda r: r.json_path)


def host_allowed(uri: str, allow_hosts: Sequence[str]) -> bool:
    """Whether *uri* is an ``http(s)`` URL on a host (``host`` or ``host:port``) in the list."""
    parts = urlsplit(uri)
    if parts.scheme not in _FETCHED_SCHEMES or not parts.hostname:
        return False
    host = parts.hostname.lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number
        return False
    for entry in allow_hosts:
        name, entry_port = _split_host(entry.strip().lower())
        if name == host and (entry_port is None or entry_port == port):
            return True
    return False


def _split_host(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` → (host, port or None)."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, int(port) if port.isdigit() else None
    return entry, None


def ref_issues(document: Any, allow_hosts: Sequence[str], where: str) -> list[PolicyIssue]:
    """A policy error for each remote reference the validator's ``allow_hosts`` does not allow."""
    issues: list[PolicyIssue] = []
    for ref in remote_refs(document):
        if host_allowed(ref.uri, allow_hosts):
            continue
        scheme = urlsplit(ref.uri).scheme
        if scheme not in _FETCHED_SCHEMES:
            why = f"only http(s) references are fetched, and {scheme!r} is not"
        else:
            host = urlsplit(ref.uri).netloc
            listed = ", ".join(allow_hosts) if allow_hosts else "none"
            why = (
                f"validators fetch nothing over the network unless allow_hosts names the host; "
                f"add {host!r} to this validator's allow_hosts to fetch it (allowed: {listed})"
            )
        issues.append(PolicyIssue(where, f"{ref.json_path} refers to {ref.uri}: {why}"))
    return issues


def _error(where: str, message: str) -> PolicyError:
    return PolicyError([PolicyIssue(where, message)])
