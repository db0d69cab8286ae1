"""The validator-gated escalation cascade."""

from __future__ import annotations

from tierwise.cascade.result import AttemptRecord, CascadeResult, Verdict
from tierwise.cascade.runner import Cascade
from tierwise.cascade.seams import (
    Failure,
    LearnedModels,
    LedgerSink,
    ProviderSource,
    RequestBuilder,
    Scorer,
    default_request_builder,
)
from tierwise.cascade.shadow import ShadowRun

__all__ = [
    "AttemptRecord",
    "Cascade",
    "CascadeResult",
    "Failure",
    "LearnedModels",
    "LedgerSink",
    "ProviderSource",
    "RequestBuilder",
    "Scorer",
    "ShadowRun",
    "Verdict",
    "default_request_builder",
]
