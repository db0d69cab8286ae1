"""A workload described by hand, for ``tierwise advise`` when the ledger has no history yet.

The fleet-wide numbers come from the same flags as ``tierwise cost`` (tasks per day, input and
output tokens per task, tier prices); a TOML file lists each kind::

    # kinds.toml: each kind's share of the tasks, its size and how its output is checked
    [kinds.extract]
    share = 0.5
    input_tokens = 1500          # default: --input-tokens
    output_tokens = 200          # default: --output-tokens
    validator = "json_schema"    # a validator type, "none", or "model" (a model call checks it)
    start_tier = "cheap"         # default: the bottom tier
    failure_rate = 0.04          # share failing on start_tier, if known

    [kinds.contract_review]
    share = 0.5
    validator = "none"
    same_answer = true           # every user must get the same answer: pin it
    quality_first = true         # quality dominates cost: pin it to the top

With a ledger, the same file (optional) only adds what the rows cannot say: ``same_answer`` and
``quality_first`` per kind.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierwise.policy.schema import VALIDATOR_TYPES

__all__ = [
    "MODEL_VALIDATORS",
    "KindWorkload",
    "WorkloadError",
    "WorkloadFile",
    "load_workload",
    "signal_of",
]

#: Validator types whose check is itself a model call (the cheap signal the articles ask for
#: is a check that is not).
MODEL_VALIDATORS = frozenset({"agreement", "model"})


class WorkloadError(ValueError):
    """The workload file cannot be read; the message names the file and the key path."""


class _KindEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    share: float = Field(ge=0, le=1)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    validator: str = "none"
    start_tier: str | None = None
    failure_rate: float | None = Field(default=None, ge=0, le=1)
    same_answer: bool = False
    quality_first: bool = False


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kinds: dict[str, _KindEntry] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class KindWorkload:
    """One kind as the file describes it (tokens ``None``: the fleet-wide flag)."""

    kind: str
    share: float
    input_tokens: int | None
    output_tokens: int | None
    validator: str
    start_tier: str | None
    failure_rate: float | None
    same_answer: bool
    quality_first: bool


@dataclass(frozen=True, slots=True)
class WorkloadFile:
    """The kinds of a workload file, in file order."""

    path: Path
    kinds: tuple[KindWorkload, ...]

    def kind(self, name: str) -> KindWorkload | None:
        return next((k for k in self.kinds if k.kind == name), None)


def signal_of(validators: tuple[str, ...] | list[str]) -> str:
    """``none`` (no validator), ``model`` (one needs a model call) or ``rule`` (cheap checks)."""
    if not validators or all(v == "none" for v in validators):
        return "none"
    if any(v in MODEL_VALIDATORS for v in validators):
        return "model"
    return "rule"


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def load_workload(path: Path, *, ladder: tuple[str, ...], shares: bool = True) -> WorkloadFile:
    """Read and check a workload file.

    *shares*: the shares must add up to 1 (a workload to project); off when the file only adds
    hints to a ledger's history.

    Raises:
        WorkloadError: unreadable, not TOML, an unknown key, a wrong type, an unknown validator
            type or tier, or shares that do not add up to 1.
    """
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"{path}: not valid TOML: {exc}") from None
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{path}: {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise WorkloadError("\n".join(problems)) from None
    problems = []
    known = (*VALIDATOR_TYPES, "none", "model")
    for name, entry in parsed.kinds.items():
        for value in entry.validator.split(","):
            if value.strip() not in known:
                problems.append(
                    f"{path}: kinds.{name}.validator: unknown {value.strip()!r}; expected one of "
                    f"{', '.join(known)} (several: comma-separated)"
                )
        if entry.start_tier is not None and entry.start_tier not in ladder:
            problems.append(
                f"{path}: kinds.{name}.start_tier: unknown tier {entry.start_tier!r}; the ladder "
                f"is {', '.join(ladder)}"
            )
    total = sum(e.share for e in parsed.kinds.values())
    if shares and not math.isclose(total, 1.0, abs_tol=1e-9):
        problems.append(f"{path}: the kinds' shares add up to {total:g}, not 1")
    if problems:
        raise WorkloadError("\n".join(problems))
    return WorkloadFile(
        path,
        tuple(
            KindWorkload(
                kind=name,
                share=e.share,
                input_tokens=e.input_tokens,
                output_tokens=e.output_tokens,
                validator=",".join(v.strip() for v in e.validator.split(",")),
                start_tier=e.start_tier,
                failure_rate=e.failure_rate,
                same_answer=e.same_answer,
                quality_first=e.quality_first,
            )
            for name, e in parsed.kinds.items()
        ),
    )
