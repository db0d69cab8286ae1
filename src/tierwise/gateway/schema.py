"""Request checks derived from the official SDKs' create-params types.

Each dialect's request is checked against what its SDK declares — ``MessageCreateParams`` of
``anthropic`` and ``CompletionCreateParams`` of ``openai``, walked once per process by
introspection and compiled into a pydantic validator — so a field the SDK types as an object,
a list of strings or one of a few literals gets a 400 naming it instead of travelling upstream
to be refused (and, where it is not refused, paid for). Required fields are required; JSON
types are strict (a string is not a number, ``true`` is not ``1``). What the SDK does not
declare still passes through untouched: unknown top-level fields, unknown keys inside known
objects, and content blocks or tools of a ``type`` the SDK does not know yet. Ranges the types
cannot express are checked from :data:`RANGES`.

Introspection keeps the checks current: a new SDK release that adds or retypes a field changes
what is checked without a line here, and ``tests/test_gateway_schema.py`` fails if the walk
meets a typing construct it does not understand.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Annotated, Any, Literal, Union

import typing_extensions as te
from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter, ValidationError

from tierwise.gateway.dialects import Dialect, RequestError

__all__ = [
    "MAX_DEPTH",
    "MAX_OUTPUT_TOKENS",
    "RANGES",
    "check_request",
    "parse_request",
    "request_adapter",
]

#: The deepest nesting of objects and arrays a request may have (real ones stay under 20).
MAX_DEPTH = 64

#: The largest output limit the gateway forwards (no model writes more; it also keeps every
#: worst-case budget reservation a finite, storable amount).
MAX_OUTPUT_TOKENS = 1_000_000

#: (minimum, maximum) of numeric top-level fields, from each API's reference. ``None`` is open.
RANGES: Mapping[Dialect, Mapping[str, tuple[float | None, float | None]]] = {
    "anthropic": {
        # 0 is allowed: it pre-warms the prompt cache without generating (the SDK's docstring).
        "max_tokens": (0, MAX_OUTPUT_TOKENS),
        "temperature": (0, 1),
        "top_p": (0, 1),
        "top_k": (0, None),
    },
    "openai": {
        "max_tokens": (1, MAX_OUTPUT_TOKENS),
        "max_completion_tokens": (1, MAX_OUTPUT_TOKENS),
        "temperature": (0, 2),
        "top_p": (0, 1),
        "n": (1, 1),  # the gateway answers with one choice
        "frequency_penalty": (-2, 2),
        "presence_penalty": (-2, 2),
        "top_logprobs": (0, 20),
        "seed": (-(2**63), 2**63 - 1),
    },
}

#: Fields each API takes that this SDK's params type does not declare (or declares only on the
#: streaming variant), with their JSON types.
_EXTRA_FIELDS: Mapping[Dialect, Mapping[str, Any]] = {
    "anthropic": {
        "stream": bool,
        "temperature": float,
        "top_p": float,
        "top_k": int,
        "stop_sequences": list[str],
    },
    "openai": {"stream": bool | None},
}

_CONFIG = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
_OTHER = "__other__"  # the tag of a block or tool type the SDK does not know


#: A ``\\uD800``–``\\uDFFF`` escape: the only way a lone surrogate gets into decoded JSON.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_request(dialect: Dialect, body: bytes) -> dict[str, Any]:
    """Decode a request body and check it against the dialect's SDK types.

    Returns the caller's JSON object, to forward untouched (``model`` replaced).

    Raises:
        RequestError: 400 — not JSON (``NaN`` and ``Infinity`` included), numbers too long to
            read, nesting deeper than :data:`MAX_DEPTH`, a lone surrogate in a string, not an
            object, or a field the SDK types differently.
    """
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError(f"the request body nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    except ValueError as exc:  # NaN / Infinity, or an integer too long to convert
        reason = str(exc) if "JSON number" in str(exc) else "a number has over 4300 digits"
        raise RequestError(f"the request body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        found = type(data).__name__
        raise RequestError(f"the request body must be a JSON object, found a JSON {found}")
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH:  # else it cannot nest that deep
        _check_depth(data)
    if _SURROGATE_ESCAPE.search(body):
        _check_text(data)
    check_request(dialect, data)
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_depth(data: Any) -> None:
    """Refuse nesting past :data:`MAX_DEPTH` (without recursion: the data may be deep)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestError(f"the request body nests deeper than {MAX_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def _check_text(data: Any) -> None:
    """Refuse strings holding a lone surrogate (``"\\ud800"``): they are not Unicode text."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            where = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
            for text in (value, key):
                if isinstance(text, str):
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        raise RequestError(
                            f"{where}: a string holds a lone surrogate escape (\\ud800-\\udfff); "
                            "send valid Unicode text",
                            param=where,
                        ) from None
            if isinstance(value, dict | list):
                stack.append((value, where))


def check_request(dialect: Dialect, data: dict[str, Any]) -> None:
    """Check a decoded request body against its dialect's SDK types and ranges.

    Raises:
        RequestError: 400 naming the first bad field (``messages[0].content[1].source: ...``).
    """
    try:
        request_adapter(dialect).validate_python(data)
    except ValidationError as exc:
        message, param = _describe(exc, data)
        raise RequestError(message, param=param or None) from None
    for name, (low, high) in RANGES[dialect].items():
        value = data.get(name)
        if value is None or isinstance(value, bool):
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise RequestError(f"{name}: must be {bounds}, found {value}", param=name)
    if not data.get("messages"):
        raise RequestError("messages: at least 1 message is required", param="messages")


@cache
def request_adapter(dialect: Dialect) -> TypeAdapter[Any]:
    """The compiled validator for one dialect (built once per process, ~0.1 s)."""
    base: Any
    if dialect == "anthropic":
        from anthropic.types.message_create_params import MessageCreateParamsBase

        base = MessageCreateParamsBase
    else:
        from openai.types.chat.completion_create_params import CompletionCreateParamsBase

        base = CompletionCreateParamsBase
    walker = _Walker()
    root = walker.typed_dict(base, extra=_EXTRA_FIELDS[dialect])
    return TypeAdapter(root)


class _Walker:
    """Rebuilds the SDK's TypedDicts with JSON-strict, pass-through-tolerant types."""

    def __init__(self) -> None:
        self._done: dict[Any, Any] = {}

    def typed_dict(self, td: Any, extra: Mapping[str, Any] | None = None) -> Any:
        if td in self._done:
            return self._done[td]
        self._done[td] = dict[str, Any]  # a self-reference checks loosely rather than loop
        fields: dict[str, Any] = {}
        for key, hint in te.get_type_hints(td, include_extras=True).items():
            origin: object = te.get_origin(hint)
            if origin in (te.Required, te.NotRequired):
                inner = self.convert(te.get_args(hint)[0])
                fields[key] = te.Required[inner] if origin is te.Required else te.NotRequired[inner]
            else:
                fields[key] = te.NotRequired[self.convert(hint)]
        for key, hint in (extra or {}).items():
            fields.setdefault(key, te.NotRequired[hint])
        rebuilt = te.TypedDict(td.__name__, fields, total=False)  # type: ignore[misc]
        rebuilt.__pydantic_config__ = _CONFIG  # type: ignore[attr-defined]
        self._done[td] = rebuilt
        return rebuilt

    def convert(self, hint: Any) -> Any:
        if hint is Any or hint is object:
            return Any
        if hint in (str, int, float, bool, type(None)):
            return hint
        if te.is_typeddict(hint):
            return self.typed_dict(hint)
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            return dict[str, Any]  # a response object echoed back: checked by its tag only
        origin: object = te.get_origin(hint)
        args = te.get_args(hint)
        if origin in (te.Annotated, Annotated):
            return self.convert(args[0])
        if origin in (te.Literal, Literal):
            return hint
        if origin in (Union, types.UnionType):
            return self.union(hint)
        if origin in (list, Iterable, Sequence, typing.Iterable, typing.Sequence, list):
            return list[self.convert(args[0])] if args else list[Any]  # type: ignore[misc]
        if origin in (dict, dict, Mapping):
            return dict[str, self.convert(args[1])] if args else dict[str, Any]  # type: ignore[misc]
        if hint in (bytes, te.Buffer) or origin is typing.IO or _is_pathlike(hint):
            return _Never  # file inputs of the SDK's upload helpers: never JSON
        raise TypeError(f"the request checker does not understand {hint!r}")

    def union(self, hint: Any) -> Any:
        members = _flatten(hint)
        nullable = type(None) in members
        members = [m for m in members if m is not type(None) and m is not _Never]
        for key in ("type", "role"):
            tags = [_literal_values(m, key) for m in members]
            if members and all(tags):
                return self._tagged(members, tags, key, nullable)
        converted = tuple(dict.fromkeys(self.convert(m) for m in members))
        result: Any = converted[0] if len(converted) == 1 else Union[converted]  # noqa: UP007
        return result | None if nullable else result

    def _tagged(
        self, members: list[Any], tags: list[tuple[str, ...]], key: str, nullable: bool
    ) -> Any:
        """A union told apart by its ``type`` (or ``role``) literal; unknown tags pass."""
        chosen: dict[str, Any] = {}
        for member, values in zip(members, tags, strict=True):
            for value in values:
                if value not in chosen or (
                    te.is_typeddict(member) and not te.is_typeddict(chosen[value])
                ):
                    chosen[value] = member  # a params TypedDict wins over a response model
        choices = [Annotated[self.convert(m), Tag(t)] for t, m in chosen.items()]
        if key == "type":  # a block or tool type the SDK does not know yet passes through
            choices.append(Annotated[dict[str, Any], Tag(_OTHER)])
        first = next(iter(chosen))
        result: Any = Annotated[
            Union[tuple(choices)],  # noqa: UP007
            Discriminator(_discriminator(key, frozenset(chosen), first)),
        ]
        return result | None if nullable else result


class _NeverType:
    """Stands for SDK inputs that cannot occur in JSON (bytes, paths, open files)."""


_Never: Any = _NeverType


def _discriminator(key: str, known: frozenset[str], first: str) -> Callable[[Any], str]:
    """Pick the member by ``value[key]``; an unknown ``type`` passes, an unknown ``role`` not."""

    def tag(value: Any) -> str:
        if isinstance(value, dict):
            found = value.get(key)
            if isinstance(found, str) and found in known:
                return found
            if key == "role":
                return found if isinstance(found, str) else "(missing)"
            return _OTHER
        return first  # not an object: the first member's check says so

    return tag


def _flatten(hint: Any) -> list[Any]:
    out: list[Any] = []
    for arg in te.get_args(hint):
        origin: object = te.get_origin(arg)
        if origin in (te.Annotated, Annotated):
            arg = te.get_args(arg)[0]
            origin = te.get_origin(arg)
        if origin in (Union, types.UnionType):
            out.extend(_flatten(arg))
        elif arg is bytes or origin is typing.IO or _is_pathlike(arg):
            out.append(_Never)
        else:
            out.append(arg)
    return out


def _is_pathlike(hint: Any) -> bool:
    import os

    return hint is os.PathLike or te.get_origin(hint) is os.PathLike


def _literal_values(member: Any, key: str) -> tuple[str, ...]:
    """The string literals a union member's *key* may take, or ``()``."""
    hint: Any = None
    if te.is_typeddict(member):
        hint = te.get_type_hints(member, include_extras=True).get(key)
        if te.get_origin(hint) in (te.Required, te.NotRequired):
            hint = te.get_args(hint)[0]
    elif isinstance(member, type) and issubclass(member, BaseModel):
        field = member.model_fields.get(key)
        hint = field.annotation if field is not None else None
    if te.get_origin(hint) in (te.Literal, Literal):
        return tuple(v for v in te.get_args(hint) if isinstance(v, str))
    return ()


def _describe(exc: ValidationError, data: Any) -> tuple[str, str]:
    """One line naming the field and what was wrong, and the field path (for ``param``).

    Pydantic's locations mix field names with union tags; walking them along the data tells
    the two apart. Of a union's alternatives the one that got furthest is reported.
    """
    errors = exc.errors(include_url=False, include_context=True, include_input=False)
    best: tuple[int, int, str, str] | None = None
    for order, err in enumerate(errors):
        path, depth = _path(tuple(err["loc"]), data)
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "union_tag_invalid":  # only roles are a closed set
            expected = (err.get("ctx") or {}).get("expected_tags", "")
            path, depth = (f"{path}.role" if path else "role"), depth + 1
            msg = f"Input should be one of {expected}"
        rank = (depth, -order)
        if best is None or rank > best[:2]:
            best = (depth, -order, path, msg)
    assert best is not None
    _, _, path, msg = best
    return f"{path or 'body'}: {msg}", path


def _path(loc: tuple[str | int, ...], data: Any) -> tuple[str, int]:
    """The field path of an error location, and how deep into the data it goes.

    A string in *loc* is a field when the data at that point has such a key (or it is the last
    part: a missing field); otherwise it is a union tag pydantic added (``str``, ``user``,
    ``list[...]``, a TypedDict's name) and is skipped.
    """
    out, depth, node = "", 0, data
    last = len(loc) - 1
    for i, part in enumerate(loc):
        if isinstance(part, int):
            if isinstance(node, list) and 0 <= part < len(node):
                out, node, depth = f"{out}[{part}]", node[part], depth + 1
            continue
        if isinstance(node, dict) and (part in node or i == last):
            out = f"{out}.{part}" if out else part
            node, depth = node.get(part), depth + 1
    return out, depth
