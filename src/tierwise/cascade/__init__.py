"""The validator-gated escalation cascade."""

from __future__ import annotations

from tierwise.cascade.result import AttemptRecord, CascadeResult, Verdict
from tierwise.cascade.runner import Cascade
from tierwise.cascade.seams import (
    Failure,
    LedgerSink,
    ProviderSource,
    RequestBuilder,
    Scorer,
    default_request_builder,
)

__all__ = [
    "AttemptRecord",
    "Cascade",
    "CascadeResult",
    "Failure",
    "LedgerSink",
    "ProviderSource",
    "RequestBuilder",
    "Scorer",
    "Verdict",
    "default_request_builder",
]
