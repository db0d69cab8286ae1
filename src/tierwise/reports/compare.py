"""Before and after: two windows side by side, and the bill's change split into its causes.

``tierwise report compare --before A..B --after C..D`` builds the weekly report of each window
(:func:`tierwise.reports.weekly.weekly_report`, so every figure is the one ``tierwise report``
prints for that window) and sets the articles' table beside it: call volume, tier mix, bill,
escalation rate and people's flag rates as the quality signal, each with its change.

**The split.** The live traffic's bill is calls × cost per call, and cost per call is the tier
mix (each tier's share of the calls) weighted by each tier's own cost per call (tokens × prices).
With N calls, mᵢ the share of tier i and uᵢ its cost per call, before (0) and after (1)::

    volume = (N₁ − N₀) · B₀ / N₀                  the calls, at before's cost per call
    mix    = N₁ · Σᵢ (m₁ᵢ − m₀ᵢ) · u₀ᵢ            the shares moved, at before's cost per tier
    unit   = N₁ · Σᵢ m₁ᵢ · (u₁ᵢ − u₀ᵢ)            tokens and prices per call on each tier
    side   = probe and shadow spend, after − before

and volume + mix + unit = B₁ − B₀ exactly (each step changes one factor: volume, then mix, then
unit cost). A tier that had no calls before has no cost per call to hold fixed: its whole spend
after is mix (a new tier used is a routing change), and one with no calls after loses its share
as mix. Without calls before, the whole change is volume. The parts are exact rationals,
rounded half-even to the pico-dollar; the unit part takes the rounding so that the four parts
add up to the bill's change exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tierwise.ledger.schema import from_pico

if TYPE_CHECKING:
    from tierwise.ledger import Ledger
    from tierwise.ledger.summary_store import SummaryProgress
    from tierwise.policy import Policy
    from tierwise.reports.measures import TierShare
    from tierwise.reports.weekly import WeeklyReport

__all__ = ["BillSplit", "Comparison", "Row", "compare", "compare_reports", "split_bill"]


def _pico(value: Fraction) -> int:
    """A rational amount of pico-USD rounded half-even to an integer (``round`` on a Fraction)."""
    return round(value)


@dataclass(frozen=True, slots=True)
class BillSplit:
    """The live bill's change in four parts that add up to it (pico-USD; see the module)."""

    total: int
    volume: int
    mix: int
    unit: int
    side: int
    calls_before: int
    calls_after: int
    mix_by_tier: dict[str, int]
    unit_by_tier: dict[str, int]

    @property
    def total_usd(self) -> Decimal:
        return from_pico(self.total)

    @property
    def volume_usd(self) -> Decimal:
        return from_pico(self.volume)

    @property
    def mix_usd(self) -> Decimal:
        return from_pico(self.mix)

    @property
    def unit_usd(self) -> Decimal:
        return from_pico(self.unit)

    @property
    def side_usd(self) -> Decimal:
        return from_pico(self.side)

    @property
    def verdict(self) -> str:
        """Which cause dominates: a routing change, or more (or fewer, or bigger) calls."""
        if self.total == 0 and self.mix == 0:
            return "the bill did not change"
        other = self.volume + self.unit
        if abs(self.mix) >= abs(other):
            what = "saved" if self.mix < 0 else "cost"
            return f"the tier mix explains most of it: routing {what} {_plain(abs(self.mix))}"
        return (
            f"volume and token counts explain most of it ({_plain(other)}); "
            f"the tier mix {_plain(self.mix)}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_usd": str(self.total_usd),
            "volume_usd": str(self.volume_usd),
            "mix_usd": str(self.mix_usd),
            "unit_usd": str(self.unit_usd),
            "side_usd": str(self.side_usd),
            "calls_before": self.calls_before,
            "calls_after": self.calls_after,
            "mix_by_tier_usd": {t: str(from_pico(v)) for t, v in self.mix_by_tier.items()},
            "unit_by_tier_usd": {t: str(from_pico(v)) for t, v in self.unit_by_tier.items()},
            "verdict": self.verdict,
        }


def _plain(pico: int) -> str:
    value = from_pico(pico)
    return f"-${-value:,.6f}" if value < 0 else f"${value:,.6f}"


def split_bill(
    before: Sequence[TierShare],
    after: Sequence[TierShare],
    *,
    side_before: int = 0,
    side_after: int = 0,
) -> BillSplit:
    """Split the change between two tier mixes' bills (see the module docstring).

    *before* / *after*: calls and pico-USD per tier (:func:`tierwise.reports.measures.tier_mix`);
    *side_before* / *side_after*: probe and shadow spend in pico-USD.
    """
    b = {t.tier: (t.calls, t.cost_pusd) for t in before}
    a = {t.tier: (t.calls, t.cost_pusd) for t in after}
    n0, n1 = sum(c for c, _ in b.values()), sum(c for c, _ in a.values())
    bill0, bill1 = sum(m for _, m in b.values()), sum(m for _, m in a.values())
    tiers = list(dict.fromkeys([*b, *a]))
    mix_by: dict[str, Fraction] = {}
    unit_by: dict[str, Fraction] = {}
    if n0 == 0:
        volume = Fraction(bill1 - bill0)
        mix_by = {t: Fraction(0) for t in tiers}
        unit_by = {t: Fraction(0) for t in tiers}
    else:
        volume = Fraction(n1 - n0) * Fraction(bill0, n0)
        for t in tiers:
            c0, m0 = b.get(t, (0, 0))
            c1, m1 = a.get(t, (0, 0))
            if c0 == 0:  # no cost per call to hold fixed: all of it is the mix
                mix_by[t], unit_by[t] = Fraction(m1), Fraction(0)
                continue
            u0 = Fraction(m0, c0)
            # N₁·(m₁ − m₀)·u₀ with m = calls ÷ N
            mix_by[t] = (Fraction(c1) - Fraction(n1 * c0, n0)) * u0
            unit_by[t] = Fraction(m1) - c1 * u0 if c1 else Fraction(0)
    total_live = bill1 - bill0
    volume_p = _pico(volume)
    mix_p = {t: _pico(v) for t, v in mix_by.items()}
    mix_total = sum(mix_p.values())
    unit_p = {t: _pico(v) for t, v in unit_by.items()}
    unit_total = total_live - volume_p - mix_total  # exact by construction, rounding included
    return BillSplit(
        total=total_live + side_after - side_before,
        volume=volume_p,
        mix=mix_total,
        unit=unit_total,
        side=side_after - side_before,
        calls_before=n0,
        calls_after=n1,
        mix_by_tier=mix_p,
        unit_by_tier=unit_p,
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a measure before and after, and how it changed.

    ``kind`` says how to read and change it: ``money`` (USD, change in USD and %), ``count``
    (change and %), ``rate`` (a share; change in percentage points), ``seconds``.
    """

    key: str
    label: str
    kind: str
    before_value: Decimal | int | float | None
    after_value: Decimal | int | float | None

    @property
    def delta(self) -> Decimal | int | float | None:
        if self.before_value is None or self.after_value is None:
            return None
        return self.after_value - self.before_value  # type: ignore[operator]

    @property
    def relative(self) -> float | None:
        if self.kind not in ("money", "count", "seconds") or not self.before_value:
            return None
        delta = self.delta
        return None if delta is None else float(delta) / float(self.before_value)

    def _show(self, value: Decimal | int | float | None) -> str:
        from tierwise.reports.render import money, pct, seconds

        if value is None:
            return "-"
        if self.kind == "money":
            return money(Decimal(value))
        if self.kind == "rate":
            return pct(float(value))
        if self.kind == "seconds":
            return seconds(float(value))
        return f"{value:,}"

    @property
    def before(self) -> str:
        return self._show(self.before_value)

    @property
    def after(self) -> str:
        return self._show(self.after_value)

    @property
    def change(self) -> str:
        delta = self.delta
        if delta is None:
            return "-"
        if self.kind == "rate":
            return f"{float(delta) * 100:+.1f} pt"
        shown = self._show(delta)
        shown = shown if shown.startswith("-") else "+" + shown
        relative = self.relative
        return shown + (f" ({relative * 100:+.1f}%)" if relative is not None else "")

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Decimal | int | float | None) -> Any:
            return str(value) if isinstance(value, Decimal) else value

        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "before": plain(self.before_value),
            "after": plain(self.after_value),
            "change": plain(self.delta),
            "relative_change": self.relative,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two windows' reports, the table of their measures and the bill's split."""

    before: WeeklyReport
    after: WeeklyReport
    rows: tuple[Row, ...]
    split: BillSplit

    def row(self, key: str) -> Row:
        """The row with this key (``bill``, ``calls``, ``mix_calls:cheap``, ...)."""
        return next(r for r in self.rows if r.key == key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": {
                "since": self.before.since.isoformat(),
                "until": self.before.until.isoformat(),
            },
            "after": {"since": self.after.since.isoformat(), "until": self.after.until.isoformat()},
            "rows": [r.as_dict() for r in self.rows],
            "bill_split": self.split.as_dict(),
        }


def _rows(b: WeeklyReport, a: WeeklyReport) -> list[Row]:
    bf, af = b.fleet, a.fleet
    mix_b = {t.tier: t for t in b.tier_mix}
    mix_a = {t.tier: t for t in a.tier_mix}
    index = {t.tier: t.tier_index for t in (*b.tier_mix, *a.tier_mix)}
    tiers = sorted(index, key=lambda t: (index[t], t))
    rows = [
        Row("tasks", "tasks", "count", sum(d.tasks for d in b.days), sum(d.tasks for d in a.days)),
        Row(
            "calls",
            "call volume (live calls)",
            "count",
            sum(t.calls for t in b.tier_mix),
            sum(t.calls for t in a.tier_mix),
        ),
    ]
    for tier in tiers:
        tb, ta = mix_b.get(tier), mix_a.get(tier)
        rows.append(
            Row(
                f"mix_calls:{tier}",
                f"mix: {tier} (share of calls)",
                "rate",
                tb.calls_share if tb else 0.0,
                ta.calls_share if ta else 0.0,
            )
        )
    rows += [
        Row("bill", "bill", "money", b.total_usd, a.total_usd),
        Row("bill_live", "  live traffic", "money", _live(b), _live(a)),
        Row("bill_side", "  probe and shadow calls", "money", _side(b), _side(a)),
    ]
    for tier in tiers:
        tb, ta = mix_b.get(tier), mix_a.get(tier)
        rows.append(
            Row(
                f"mix_money:{tier}",
                f"  on {tier}",
                "money",
                tb.cost_usd if tb else Decimal(0),
                ta.cost_usd if ta else Decimal(0),
            )
        )
    rows += [
        Row(
            "per_accepted",
            "per accepted task",
            "money",
            bf.cost_per_accepted_usd,
            af.cost_per_accepted_usd,
        ),
        Row("per_session", "per session", "money", b.per_session_usd, a.per_session_usd),
        Row("wasted", "thrown away on failed attempts", "money", bf.wasted_usd, af.wasted_usd),
        Row("escalation", "escalation rate", "rate", bf.escalation.value, af.escalation.value),
        Row(
            "first_try", "first-try pass", "rate", bf.first_try_pass.value, af.first_try_pass.value
        ),
    ]
    for flag in b.flags:
        rows.append(
            Row(
                f"flag:{flag}",
                f"flagged {flag}",
                "rate",
                b.flags[flag].value,
                a.flags[flag].value if flag in a.flags else None,
            )
        )
    rows += [
        Row(
            "efficiency",
            "routing efficiency ratio",
            "rate",
            b.efficiency.ratio.value,
            a.efficiency.ratio.value,
        ),
        Row(
            "p95_escalated",
            "p95 latency, escalated",
            "seconds",
            bf.latency_escalated.p95_s,
            af.latency_escalated.p95_s,
        ),
        Row(
            "p50_direct",
            "p50 latency, direct",
            "seconds",
            bf.latency_direct.p50_s,
            af.latency_direct.p50_s,
        ),
    ]
    return rows


def _live(r: WeeklyReport) -> Decimal:
    return from_pico(r.lines.routed + r.lines.passthrough)


def _side(r: WeeklyReport) -> Decimal:
    return from_pico(r.lines.probe + r.lines.shadow)


def compare_reports(before: WeeklyReport, after: WeeklyReport) -> Comparison:
    """The comparison of two reports already built."""
    split = split_bill(
        before.tier_mix,
        after.tier_mix,
        side_before=before.lines.probe + before.lines.shadow,
        side_after=after.lines.probe + after.lines.shadow,
    )
    return Comparison(before, after, tuple(_rows(before, after)), split)


def compare(
    ledger: Ledger,
    policy: Policy,
    before: tuple[datetime, datetime],
    after: tuple[datetime, datetime],
    *,
    now: datetime | None = None,
    keep: bool = True,
    progress: SummaryProgress | None = None,
) -> Comparison:
    """Compare the tasks created in the *before* window with those in the *after* window.

    Raises:
        ValueError: an empty window or a naive datetime.
        LedgerError: the ledger could not be read.
    """
    from tierwise.reports.weekly import weekly_report

    reports = [
        weekly_report(
            ledger, policy, since=since, until=until, now=now, keep=keep, progress=progress
        )
        for since, until in (before, after)
    ]
    return compare_reports(reports[0], reports[1])
