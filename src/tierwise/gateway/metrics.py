"""Prometheus metrics of one gateway app (its own registry: no global state).

Exposed at ``GET /metrics``. With ``--workers N`` each worker process counts its own requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from tierwise.cascade.result import AttemptRecord
    from tierwise.cascade.shadow import ShadowRun

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "escalation_reason"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class _Children:
    """A labelled metric's children, each looked up once.

    ``Counter.labels`` checks and joins its values under a lock on every call; the gateway asks
    for the same few children on every request, so a dict keyed by the values answers instead
    (prometheus keeps every child it made anyway: this holds no more than the metric does).
    """

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Counter] = {}

    def __call__(self, *values: str) -> Counter:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


def escalation_reason(attempt: AttemptRecord) -> str | None:
    """Why an attempt made the task climb: the failing validator's name or the error class."""
    if attempt.outcome == "rejected":
        return (attempt.failure or "rejected").split(":", 1)[0].strip() or "rejected"
    if attempt.outcome == "error":
        return attempt.error_class or "error"
    return None


class GatewayMetrics:
    """Counters and histograms of requests, attempts, escalations, cost, tokens and overhead."""

    def __init__(self, kind_label: Callable[[str], str] = str) -> None:
        #: Maps a task's kind to its label (the policy's: invented kinds share ``undeclared``).
        self.kind_label = kind_label
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tierwise_gateway_requests",
            "Requests answered, by dialect, route (auto|kind|model) and HTTP status.",
            ["dialect", "route", "status"],
            registry=r,
        )
        self.attempts = Counter(
            "tierwise_gateway_attempts",
            "Upstream attempts by task kind, tier and outcome.",
            ["kind", "tier", "outcome"],
            registry=r,
        )
        self.escalations = Counter(
            "tierwise_gateway_escalations",
            "Attempts that made a task climb (or fail), by reason: validator name or error class.",
            ["reason"],
            registry=r,
        )
        self.cost = Counter(
            "tierwise_gateway_cost_usd",
            "Upstream spend in USD, by kind and tier.",
            ["kind", "tier"],
            registry=r,
        )
        self.tokens = Counter(
            "tierwise_gateway_tokens",
            "Tokens by usage bucket (input, cache_write_5m, cache_write_1h, cache_read, output).",
            ["bucket"],
            registry=r,
        )
        self.overhead = Histogram(
            "tierwise_gateway_overhead_seconds",
            "Time spent in the gateway outside upstream calls, per request.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("tierwise_gateway_in_flight", "Requests being served.", registry=r)
        # Shadow calls: their own lines, never in the request counters or spend above.
        self.shadow_runs = Counter(
            "tierwise_shadow_runs",
            "Shadowed requests by kind and status (done, paused, busy, error, nothing_to_try).",
            ["kind", "status"],
            registry=r,
        )
        self.shadow_attempts = Counter(
            "tierwise_shadow_attempts",
            "Shadow calls by kind, tier and outcome (accepted: passed the kind's validators).",
            ["kind", "tier", "outcome"],
            registry=r,
        )
        self.shadow_cost = Counter(
            "tierwise_shadow_cost_usd",
            "Shadow spend in USD (the shadow budget's, no caller's), by kind and tier.",
            ["kind", "tier"],
            registry=r,
        )
        self.shadow_paused = Gauge(
            "tierwise_shadow_paused",
            "1 while shadowing is paused because [budgets] shadow_day_usd is spent for the "
            "UTC day, else 0.",
            registry=r,
        )
        # the per-request counters' children, looked up once (see _Children)
        self.request_count = _Children(self.requests)
        self._attempt_count = _Children(self.attempts)
        self._cost_sum = _Children(self.cost)
        self._token_count = _Children(self.tokens)
        self._escalation_count = _Children(self.escalations)

    def observe_attempts(self, attempts: Sequence[AttemptRecord]) -> None:
        """Count a request's attempts, their cost and tokens, and its escalations."""
        for a in attempts:
            kind = self.kind_label(a.kind)
            self._attempt_count(kind, a.tier, a.outcome).inc()
            if a.cost_usd:
                self._cost_sum(kind, a.tier).inc(float(a.cost_usd))
            u = a.usage
            for bucket, value in (
                ("input", u.input_tokens),
                ("cache_write_5m", u.cache_write_5m_tokens),
                ("cache_write_1h", u.cache_write_1h_tokens),
                ("cache_read", u.cache_read_tokens),
                ("output", u.output_tokens),
            ):
                if value:
                    self._token_count(bucket).inc(value)
            # a failed probe (one tier below the floor) is no climb: the task carries on
            reason = escalation_reason(a) if a.role != "probe" else None
            if reason is not None:
                self._escalation_count(reason).inc()

    def observe_shadow(self, kind: str, run: ShadowRun) -> None:
        """Count one shadowed request, its shadow calls and their cost."""
        self.shadow_runs.labels(kind, run.status).inc()
        for a in run.attempts:
            self.shadow_attempts.labels(kind, a.tier, a.outcome).inc()
            if a.cost_usd:
                self.shadow_cost.labels(kind, a.tier).inc(float(a.cost_usd))

    def render(self) -> bytes:
        """The exposition text."""
        return bytes(generate_latest(self.registry))
