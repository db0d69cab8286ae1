"""The ``json_schema`` validator, and the only network access a validator may have.

``jsonschema`` on its own fetches any remote ``$ref`` while validating (with ``urlopen``, from
inside a request). Here a schema is compiled with a ``referencing`` registry whose retriever
fetches only ``http(s)`` URLs on the hosts the validator's ``allow_hosts`` names — the loader
already refuses schemas that point elsewhere; this catches what only shows at run time (a
fetched document pointing to another host). A refused or failed fetch is a failed verdict.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any

from tierwise.cascade.result import Verdict
from tierwise.cascade.validators._base import BaseValidator, ValidationContext
from tierwise.cascade.validators._text import parse_json, shorten
from tierwise.policy.schemas import check_schema, host_allowed, read_schema, ref_issues

if TYPE_CHECKING:
    from jsonschema.protocols import Validator as SchemaChecker
    from referencing import Resource

#: A fetched schema larger than this is refused (a schema, not a download).
MAX_REMOTE_BYTES = 1_000_000
FETCH_TIMEOUT_S = 10.0


class RefRefusedError(Exception):
    """A ``$ref`` led to a document this validator may not fetch."""


class RemoteSchemas:
    """Fetches documents a schema refers to, from allowed hosts only, each at most once."""

    def __init__(self, allow_hosts: Sequence[str]) -> None:
        self.allow_hosts = tuple(allow_hosts)
        self._cache: dict[str, Resource[Any]] = {}
        self._lock = Lock()

    def __call__(self, uri: str) -> Resource[Any]:
        """The document at *uri* as a ``referencing`` resource (the registry's retriever)."""
        from referencing import Resource
        from referencing.jsonschema import DRAFT202012

        with self._lock:
            cached = self._cache.get(uri)
        if cached is not None:
            return cached
        if not host_allowed(uri, self.allow_hosts):
            allowed = ", ".join(self.allow_hosts) or "none"
            raise RefRefusedError(
                f"$ref {uri} refused: its host is not in this validator's allow_hosts "
                f"(allowed: {allowed})"
            )
        resource = Resource.from_contents(_fetch(uri), default_specification=DRAFT202012)
        with self._lock:
            self._cache[uri] = resource
        return resource


def _fetch(uri: str) -> Any:
    import httpx2

    try:
        # No redirects: a redirect could lead to a host the policy did not allow.
        with (
            httpx2.Client(timeout=FETCH_TIMEOUT_S, follow_redirects=False) as client,
            client.stream("GET", uri, headers={"accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise RefRefusedError(f"$ref {uri}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_REMOTE_BYTES:
                    raise RefRefusedError(f"$ref {uri}: larger than {MAX_REMOTE_BYTES} bytes")
    except httpx2.HTTPError as exc:
        raise RefRefusedError(f"$ref {uri}: {type(exc).__name__}: {exc}") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RefRefusedError(f"$ref {uri}: not a JSON document") from None


def schema_checker(
    schema: str | dict[str, Any], base_dir: Path, where: str, allow_hosts: Sequence[str] = ()
) -> tuple[SchemaChecker, bool]:
    """Compile a policy's schema; return the checker and whether it refers to remote documents.

    Raises:
        PolicyError: the schema cannot be read, is not a valid JSON Schema, or refers to a host
            *allow_hosts* does not name.
    """
    from jsonschema_specifications import REGISTRY as SPECIFICATIONS
    from referencing import Registry

    from tierwise.errors import PolicyError
    from tierwise.policy.schemas import remote_refs

    document = read_schema(schema, base_dir, where)
    cls = check_schema(document, where)
    issues = ref_issues(document, allow_hosts, where)
    if issues:
        raise PolicyError(issues)
    # attrs names the field _retrieve; mypy sees only that, not the init argument
    fetching: Registry[Any] = Registry(retrieve=RemoteSchemas(allow_hosts))  # type: ignore[call-arg]
    registry: Registry[Any] = SPECIFICATIONS.combine(fetching)
    checker = cls(document, registry=registry, format_checker=cls.FORMAT_CHECKER)
    return checker, bool(remote_refs(document))


class JsonSchemaValidator(BaseValidator):
    """Passes when the output is JSON that the schema accepts.

    The reason names the JSON path of the most relevant error, e.g.
    ``$.total: 'abc' is not of type 'number'``, and how many more there are. A ``$ref`` that
    cannot be fetched (host not allowed, HTTP error) fails the verdict with that reason.
    """

    def __init__(self, name: str, checker: SchemaChecker, *, remote: bool = False) -> None:
        super().__init__(name)
        self.checker = checker
        self.remote = remote

    def _check(self, output: str, ctx: ValidationContext) -> Verdict:
        from jsonschema.exceptions import best_match, relevance
        from referencing.exceptions import Unresolvable

        ok, document, error = parse_json(output)
        if not ok:
            return self.fail(error)
        try:
            errors = sorted(self.checker.iter_errors(document), key=relevance)
        except Unresolvable as exc:
            return self.fail(_unresolvable(exc))
        if not errors:
            return self.ok()
        best = best_match(errors)
        assert best is not None  # errors is not empty
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return self.fail(f"{best.json_path}: {shorten(best.message, 300)}{more}")

    async def _acheck(self, output: str, ctx: ValidationContext) -> Verdict:
        if self.remote:  # a first use may fetch over the network: not on the event loop
            return await asyncio.to_thread(self._check, output, ctx)
        return self._check(output, ctx)


def _unresolvable(exc: BaseException) -> str:
    """The reason a reference could not be resolved, from the refusal that caused it if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RefRefusedError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    ref = getattr(exc, "ref", None) or getattr(getattr(exc, "_wrapped", None), "ref", "?")
    return f"cannot resolve $ref {ref}"
