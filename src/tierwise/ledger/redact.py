"""Keep credentials out of ledger rows.

Failure texts come from tierwise's own errors, which never carry keys; this is the second line
of defence for everything free-form the ledger stores (failure reasons, validator reasons, and
prompt/output text when content is stored): anything shaped like a provider key or bearer token,
and the values of secret-looking environment variables captured when the ledger was opened, are
replaced by ``[redacted]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_MASK = "[redacted]"
#: Characters no text column takes: lone surrogates are not Unicode text (UTF-8 cannot hold them).
_UNSTORABLE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """*text* with what a text column cannot hold escaped (``\\ud800``).

    An upstream may echo anything; its attempt must still be written, so the few characters
    that would make the write fail are stored as their escape sequences instead.
    """
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI / Anthropic style keys
    re.compile(r"\btw_[A-Za-z0-9_\-]{16,}"),  # tierwise gateway keys
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._\-~+/]{8,}=*"),
    re.compile(
        r"(?i)((?:x-)?api[_-]?key|authorization|access[_-]?token|secret)"
        r"([\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{8,}"
    ),
)
_SECRET_NAME = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)")
_MIN_SECRET_LEN = 8


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """Values of environment variables whose names look secret, longest first."""
    found = {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    return tuple(sorted(found, key=len, reverse=True))


class Redactor:
    """Masks key-shaped strings and known secret values in text."""

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values = tuple(v for v in values if len(v) >= _MIN_SECRET_LEN)

    def __call__(self, text: str | None) -> str | None:
        """*text* with secrets masked (``None`` stays ``None``)."""
        if not text:
            return text
        for value in self._values:
            if value in text:
                text = text.replace(value, _MASK)
        for pattern in _PATTERNS:
            if pattern.groups:
                text = pattern.sub(lambda m: "".join(m.groups()) + _MASK, text)
            else:
                text = pattern.sub(_MASK, text)
        return storable(text)
