"""What a fake model says: scripts, canned behaviours, faults and deterministic token counts.

Nothing here does I/O; :mod:`tierwise.testing.server` turns a :class:`Reply` into each
provider's wire format.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Behaviour = Literal["echo", "json", "invalid_json", "low_confidence", "refusal", "truncate"]
FaultKind = Literal[
    "400", "401", "403", "404", "429", "500", "503", "529", "hang", "malformed", "cut"
]
Stop = Literal["end", "max_tokens", "tool_use", "refusal"]
Api = Literal["anthropic", "openai"]

BEHAVIOURS: tuple[str, ...] = (
    "echo",
    "json",
    "invalid_json",
    "low_confidence",
    "refusal",
    "truncate",
)
FAULT_KINDS: tuple[str, ...] = (
    "400",
    "401",
    "403",
    "404",
    "429",
    "500",
    "503",
    "529",
    "hang",
    "malformed",
    "cut",
)

#: The sentence the ``refusal`` behaviour answers with.
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."

#: Characters per token of the fake tokenizer (see :func:`count_tokens`).
CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per started 4 characters, at least 1.

    Deterministic and close enough to real tokenizers for English that usage and costs look
    realistic, while tests can predict them exactly.
    """
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the fake model calls: an Anthropic ``tool_use`` block / an OpenAI ``tool_call``."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: text, optional tool calls, and why it stopped.

    ``stop`` left at ``None`` means ``tool_use`` when there are tool calls, else ``end``. A
    reply longer than the request's ``max_tokens`` is always cut there (stop ``max_tokens``).
    """

    text: str = ""
    stop: Stop | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def stop_reason(self) -> Stop:
        if self.stop is not None:
            return self.stop
        return "tool_use" if self.tool_calls else "end"


ReplyFunction = Callable[[dict[str, Any]], "str | Reply"]


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure the fake upstream serves instead of an answer.

    Kinds: ``429`` (with a ``retry-after`` header: seconds or an HTTP date), ``500``, ``503``,
    ``529`` (overloaded), ``400``/``401``/``403``/``404`` (error bodies of each API),
    ``hang`` (no answer for ``hang_s`` seconds or until the client gives up), ``malformed``
    (status 200 with a body that is not JSON), ``cut`` (the connection closes half-way
    through the body or stream). A fault with ``always`` is served on every request;
    others are used once, in order.
    """

    kind: FaultKind
    always: bool = False
    retry_after: float | str | None = 1
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; expected one of {FAULT_KINDS}")

    @classmethod
    def parse(cls, spec: str | int | Mapping[str, Any] | Fault) -> Fault:
        """A fault from ``"429"``, ``429``, ``"500:always"`` or ``{kind=..., ...}``."""
        if isinstance(spec, Fault):
            return spec
        if isinstance(spec, int | str):
            kind, _, flag = str(spec).partition(":")
            if flag not in ("", "always"):
                raise ValueError(f"fault {spec!r}: only ':always' may follow the kind")
            return cls(kind=kind, always=flag == "always")  # type: ignore[arg-type]
        data = dict(spec)
        unknown = set(data) - {"kind", "always", "retry_after", "hang_s"}
        if unknown:
            raise ValueError(f"fault {spec!r}: unknown key(s) {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError(f"fault {spec!r}: 'kind' is required")
        data["kind"] = str(data["kind"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class When:
    """A content rule: when ``match`` (a regex) is found in the last user turn, answer thus."""

    match: str
    behaviour: Behaviour | None = None
    text: str | None = None

    def matches(self, text: str) -> bool:
        return re.search(self.match, text) is not None


@dataclass(frozen=True, slots=True)
class ModelScript:
    """How one fake model behaves.

    Args:
        behaviour: a canned behaviour (``echo``, ``json``, ``invalid_json``, ``low_confidence``,
            ``refusal``, ``truncate``) used when ``reply`` is not given.
        reply: a function of the request JSON returning the answer (text or :class:`Reply`),
            a fixed text, or a fixed :class:`Reply`.
        when: content rules tried in order before ``reply``/``behaviour`` (for TOML scripts).
        latency_s: seconds to wait before answering.
        faults: failures served before answers (see :class:`Fault`); strings like ``"429"``.
        cache_read_tokens / cache_write_tokens / cache_write_1h_tokens: prompt-cache usage
            reported on every answer, on top of the uncached input tokens.
        usage: extra or overriding fields merged into the provider's usage object.
        chunks: how many text deltas a stream splits the answer into (at most).
        chunk_delay_s: seconds between stream events (a model "typing"), 0 by default.
    """

    behaviour: Behaviour = "echo"
    reply: ReplyFunction | str | Reply | None = None
    when: tuple[When, ...] = ()
    latency_s: float = 0.0
    faults: tuple[Fault | str, ...] = ()
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    usage: Mapping[str, Any] = field(default_factory=dict)
    chunks: int = 4
    chunk_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(
                f"unknown behaviour {self.behaviour!r}; expected one of {', '.join(BEHAVIOURS)}"
            )
        for w in self.when:
            if w.behaviour is not None and w.behaviour not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {w.behaviour!r} in rule {w.match!r}")
        for name in ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.chunks < 1:
            raise ValueError("chunks must be >= 1")
        if self.latency_s < 0 or self.chunk_delay_s < 0:
            raise ValueError("latency_s and chunk_delay_s must be >= 0")

    def fault_list(self) -> list[Fault]:
        return [Fault.parse(f) for f in self.faults]

    def answer(self, request: dict[str, Any]) -> Reply:
        """The reply to one request (before truncation at ``max_tokens``)."""
        text = last_user_text(request)
        for rule in self.when:
            if rule.matches(text):
                if rule.text is not None:
                    return Reply(rule.text)
                return canned(rule.behaviour or self.behaviour, request)
        if self.reply is None:
            return canned(self.behaviour, request)
        if isinstance(self.reply, Reply):
            return self.reply
        if isinstance(self.reply, str):
            return Reply(self.reply)
        out = self.reply(request)
        return out if isinstance(out, Reply) else Reply(str(out))


# -- reading requests -------------------------------------------------------------------------


def _content_texts(content: Any) -> list[str]:
    """Text pieces of one message's content (a string or a list of blocks/parts)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, Mapping):
                continue
            if isinstance(block.get("text"), str):
                out.append(block["text"])
            elif block.get("type") == "tool_result":
                out.extend(_content_texts(block.get("content")))
    return out


def request_texts(request: Mapping[str, Any]) -> list[str]:
    """Every text piece of a request, system first, in either API's shape."""
    texts: list[str] = []
    system = request.get("system")
    if system is not None:
        texts.extend(_content_texts(system))
    for message in request.get("messages") or ():
        if isinstance(message, Mapping):
            texts.extend(_content_texts(message.get("content")))
    return texts


def last_user_text(request: Mapping[str, Any]) -> str:
    """The text of the last ``user`` turn of a request (``""`` when there is none)."""
    for message in reversed(request.get("messages") or ()):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return "\n".join(_content_texts(message.get("content")))
    return ""


def input_tokens(request: Mapping[str, Any]) -> int:
    """Uncached input tokens the fake bills for a request: the sum over its text pieces."""
    return max(1, sum(count_tokens(t) for t in request_texts(request)))


def output_tokens(reply: Reply) -> int:
    """Output tokens of a reply: its text plus each tool call's JSON input."""
    n = count_tokens(reply.text) if reply.text else 0
    n += sum(count_tokens(json.dumps(dict(c.input))) for c in reply.tool_calls)
    return max(1, n)


def canned(behaviour: str, request: Mapping[str, Any]) -> Reply:
    """The answer of a canned behaviour to a request."""
    text = last_user_text(request) or "(empty)"
    if behaviour == "echo":
        return Reply(text)
    if behaviour == "json":
        return Reply(json.dumps({"answer": text[:200], "confidence": 0.92}))
    if behaviour == "low_confidence":
        return Reply(json.dumps({"answer": text[:200], "confidence": 0.3}))
    if behaviour == "invalid_json":
        return Reply("{'answer': " + repr(text[:200]) + ", 'confidence': 0.9,")
    if behaviour == "refusal":
        return Reply(REFUSAL_TEXT, stop="refusal")
    if behaviour == "truncate":
        limit = max_tokens_of(request)
        wanted = (limit + 1) * CHARS_PER_TOKEN
        return Reply((text + " ") * (wanted // (len(text) + 1) + 1))
    raise ValueError(f"unknown behaviour {behaviour!r}")


def max_tokens_of(request: Mapping[str, Any]) -> int:
    """The request's output limit (``max_tokens`` or ``max_completion_tokens``), 4096 if none."""
    for key in ("max_tokens", "max_completion_tokens"):
        value = request.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return 4096


def fit(reply: Reply, max_tokens: int) -> tuple[Reply, int]:
    """Cut a reply at ``max_tokens`` like a real model does; returns it and its output tokens."""
    n = output_tokens(reply)
    if n <= max_tokens:
        return reply, n
    return Reply(reply.text[: max_tokens * CHARS_PER_TOKEN], stop="max_tokens"), max_tokens


# -- TOML scripts -------------------------------------------------------------------------------

_SCRIPT_KEYS = {
    "behaviour",
    "text",
    "reply",
    "when",
    "latency_s",
    "faults",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "usage",
    "chunks",
    "chunk_delay_s",
    "tool_calls",
    "stop",
}


def _resolve_callable(ref: str) -> ReplyFunction:
    module, _, name = ref.partition(":")
    if not module or not name:
        raise ValueError(f"reply {ref!r}: expected 'package.module:function'")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise ValueError(f"reply {ref!r} is not callable")
    return fn  # type: ignore[no-any-return]


def script_from_dict(data: Mapping[str, Any], where: str = "model") -> ModelScript:
    """One :class:`ModelScript` from a TOML table (see the package docstring for the keys)."""
    unknown = set(data) - _SCRIPT_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kw: dict[str, Any] = {
        k: data[k]
        for k in (
            "behaviour",
            "latency_s",
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "usage",
            "chunks",
            "chunk_delay_s",
        )
        if k in data
    }
    if "reply" in data:
        kw["reply"] = _resolve_callable(str(data["reply"]))
    if "text" in data or "tool_calls" in data or "stop" in data:
        if "reply" in data:
            raise ValueError(f"{where}: give either 'reply' or 'text'/'tool_calls', not both")
        calls = tuple(
            ToolCall(name=str(c["name"]), input=dict(c.get("input", {})), id=c.get("id"))
            for c in data.get("tool_calls", ())
        )
        kw["reply"] = Reply(text=str(data.get("text", "")), stop=data.get("stop"), tool_calls=calls)
    kw["faults"] = tuple(Fault.parse(f) for f in data.get("faults", ()))
    rules = []
    for i, rule in enumerate(data.get("when", ())):
        extra = set(rule) - {"match", "behaviour", "text"}
        if extra or "match" not in rule:
            raise ValueError(f"{where}.when[{i}]: expected keys match, behaviour, text")
        rules.append(
            When(match=rule["match"], behaviour=rule.get("behaviour"), text=rule.get("text"))
        )
    kw["when"] = tuple(rules)
    try:
        return ModelScript(**kw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Script:
    """A whole fake upstream: one script per model id, and the script for any other model."""

    models: Mapping[str, ModelScript] = field(default_factory=dict)
    default: ModelScript | None = field(default_factory=ModelScript)
    require_key: str | None = None


def parse_script(text: str, *, source: str = "<script>") -> Script:
    """Parse a TOML script (format in the :mod:`tierwise.testing` docstring).

    Raises:
        ValueError: the TOML is invalid or a table has unknown keys or values.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: {exc}") from None
    unknown = set(data) - {"models", "default", "require_key"}
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    models = {
        name: script_from_dict(table, f"{source}: models.{name!r}")
        for name, table in dict(data.get("models", {})).items()
    }
    default: ModelScript | None = ModelScript()
    if "default" in data:
        table = data["default"]
        default = None if table is False else script_from_dict(table, f"{source}: default")
    return Script(models=models, default=default, require_key=data.get("require_key"))


def load_script(path: str | Path) -> Script:
    """Read and parse a TOML script file."""
    p = Path(path)
    return parse_script(p.read_text(encoding="utf-8"), source=str(p))


def as_scripts(
    models: Mapping[str, ModelScript | Behaviour] | Sequence[str],
) -> dict[str, ModelScript]:
    """Normalise ``{"m": "json"}`` or ``["m1", "m2"]`` shorthands into model scripts."""
    if isinstance(models, Mapping):
        return {
            k: v if isinstance(v, ModelScript) else ModelScript(behaviour=v)
            for k, v in models.items()
        }
    return {m: ModelScript() for m in models}
