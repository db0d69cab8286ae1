"""How far can agreement among cheap answers take a 40% budget? An in-sample ceiling.

RouterBench's multiple-choice answers are single letters, so what a verifier can read of them
is which cheap models agree. This script measures that signal's reach generously — *in
sample*, every setting fitted and chosen on the very rows it is scored on — for the family of
strategies the project's verifier belongs to, and asks what the rest of the budget would then
have to buy:

1. **Does the text add anything?** Out-of-fold ROC AUC (5 folds) of a logistic regression on
   TF-IDF of the question plus agreement, against agreement alone, for the best cheap model's
   answers per multiple-choice source. (If the text adds little, agreement is the signal.)
2. **Agreement's frontier per multiple-choice source.** Ask a fixed panel of up to four cheap
   models on every row; a rule reads which answers agree and either accepts one of them or
   pays the top model (taking its answer, or pooling it with the panel's). The best such rule
   is chosen *on the rows it is scored on*, for every panel: the upper envelope of quality
   against cost. No real cascade that reads agreement does better on these rows.
3. **What the code source would need.** For every split of the budget, the best the
   multiple-choice sources reach together (an exact combination of their frontiers), and the
   accuracy the code source (MBPP) would then need for the whole set to match the top model —
   set against what MBPP's models and bounds actually reach there.

    .venv/bin/python benchmarks/eval_ceiling.py [PATH] [--share 0.4] [--panel 4]

PATH defaults to ``$TIERWISE_DATA_DIR/routerbench_subset`` (``../shared/data`` from the
repository root when unset). About 20 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tierwise.evaluation.dataset import DatasetError, Row
from tierwise.evaluation.loaders import load_dataset
from tierwise.evaluation.verifier_features import answer_of

REPO = Path(__file__).resolve().parent.parent
#: A model is "cheap" when its mean cost is at most this share of the top model's.
CHEAP_SHARE = 0.2
#: Budgets at which the per-source frontier is printed (share of the top's cost on all rows).
SHARES = (0.05, 0.1, 0.15, 0.2, 0.3)


def default_path() -> Path:
    base = Path(os.environ.get("TIERWISE_DATA_DIR") or "../shared/data")
    return (base if base.is_absolute() else REPO / base) / "routerbench_subset"


def cost(row: Row, model: str) -> float:
    value = row.results[model].cost_usd
    return float(value) if value is not None else 0.0


def envelope(points: np.ndarray) -> np.ndarray:
    """The upper-left envelope of (cost, correct) points: cheapest first, quality rising."""
    order = np.lexsort((-points[:, 1], points[:, 0]))
    out, best = [], -math.inf
    for c, q in points[order]:
        if q > best:
            out.append((c, q))
            best = q
    return np.array(out)


def pattern(answers: Sequence[str | None]) -> tuple[int, ...]:
    """Which answers agree: each answer's group, numbered by first appearance (−1: none)."""
    seen: dict[str, int] = {}
    return tuple(-1 if a is None else seen.setdefault(a, len(seen)) for a in answers)


def panel_frontier(
    rows: Sequence[Row],
    panel: Sequence[str],
    top: str,
    letters: dict[str, list[str | None]],
    *,
    pool: bool,
) -> np.ndarray:
    """(cost, correct) of the best rules that read which of a panel's answers agree.

    The panel answers every row. A rule sees the row's agreement pattern (which answers are
    equal), and per pattern either accepts one group's answer or pays *top* and takes its
    answer (with *pool*: whichever group of the panel and the top together it likes). Every
    choice is made in sample — the group that is right most often on these very rows, the
    patterns escalated in order of correct answers gained per dollar — so at each of its
    points no rule of this kind does better on these rows (up to one pattern's granularity).
    """
    models = [*panel, top]
    accept: dict[tuple[int, ...], np.ndarray] = {}  # pattern → right per group if accepted
    escalate: dict[tuple[int, ...], dict[tuple[int, ...], np.ndarray]] = {}
    spend: dict[tuple[int, ...], float] = {}
    for i, r in enumerate(rows):
        answers = [letters[m][i] for m in models]
        full = pattern(answers)
        key = full[:-1]
        right = np.array([r.results[m].score for m in models])
        by_group = np.zeros(len(models))  # right or not, per group of equal answers
        for g, ok in zip(full, right, strict=True):
            if g >= 0:
                by_group[g] = max(by_group[g], ok)
        panel_only = np.zeros(len(models))  # the same, the panel's answers alone
        for g, ok in zip(key, right[:-1], strict=True):
            if g >= 0:
                panel_only[g] = max(panel_only[g], ok)
        accept[key] = accept.get(key, 0) + panel_only
        after = escalate.setdefault(key, {})
        top_only = np.zeros(len(by_group))
        top_only[0] = right[-1]
        after[full] = after.get(full, 0) + (by_group if pool else top_only)
        spend[key] = spend.get(key, 0.0) + cost(r, top)
    base_cost = sum(cost(r, m) for r in rows for m in panel)
    kept = {k: float(v.max()) for k, v in accept.items()}
    gains = []
    for k in accept:
        climbed = sum(float(v.max()) for v in escalate[k].values())
        gains.append((climbed - kept[k], spend[k]))
    correct = sum(kept.values())
    points = [(base_cost, correct)]
    spent = base_cost
    for gain, dollars in sorted(gains, key=lambda t: -t[0] / t[1] if t[1] > 0 else -math.inf):
        if gain <= 0:
            break
        spent += dollars
        correct += gain
        points.append((spent, correct))
    return np.array(points)


def perfect_verifier_frontier(
    rows: Sequence[Row], cheap: Sequence[str], top: str, depth: int
) -> np.ndarray:
    """(cost, correct) of the best cascades ``cheap … → top`` whose verifier is perfect.

    Every ordered ladder of up to *depth* cheap models is tried: each row climbs until a
    model answers right (a perfect verifier knows), and rows no cheap model gets right go to
    the top — cheapest first, and only where the top is right. The upper envelope over
    ladders: generous, no real verifier is perfect.
    """
    score = np.array([[r.results[m].score for m in cheap] for r in rows])
    price = np.array([[cost(r, m) for m in cheap] for r in rows])
    top_score = np.array([r.results[top].score for r in rows])
    top_cost = np.array([cost(r, top) for r in rows])
    points = [(top_cost.sum(), top_score.sum())]
    for n in range(1, depth + 1):
        for ladder in itertools.permutations(range(len(cheap)), n):
            spent, right = np.zeros(len(rows)), np.zeros(len(rows))
            done = np.zeros(len(rows), dtype=bool)
            for j in ladder:
                spent += np.where(done, 0.0, price[:, j])
                right = np.where(done, right, score[:, j])
                done |= score[:, j] >= 0.5
            fixes = np.cumsum(np.sort(top_cost[~done & (top_score > right)]))
            points.append((spent.sum(), right.sum()))
            points += [(spent.sum() + c, right.sum() + i + 1) for i, c in enumerate(fixes)]
    return envelope(np.array(points))


def out_of_fold_auc(
    rows: Sequence[Row], model: str, partner: str, letters: dict[str, list[str | None]]
) -> tuple[float, float]:
    """AUC of agreement alone and of TF-IDF(question + answer) + agreement, 5 folds."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.array([r.results[model].score >= 0.5 for r in rows], dtype=int)
    agree = np.array(
        [
            [float(a is not None and a == b)]
            for a, b in zip(letters[model], letters[partner], strict=True)
        ]
    )
    texts = [
        f"{(r.prompt or '').split(chr(10) * 2)[-1][-1500:]} anstoken_{a}"
        for r, a in zip(rows, letters[model], strict=True)
    ]
    x = hstack(
        [
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts),
            csr_matrix(agree),
        ]
    ).tocsr()
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    p = cross_val_predict(
        LogisticRegression(max_iter=2000), x, y, cv=folds, method="predict_proba"
    )[:, 1]
    return roc_auc_score(y, agree[:, 0]), roc_auc_score(y, p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", type=Path, default=None)
    ap.add_argument("--share", type=float, default=0.4, help="budget, share of the top's cost")
    ap.add_argument("--panel", type=int, default=4, help="largest panel of cheap models")
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        ds = load_dataset(args.path or default_path())
    except DatasetError as exc:
        raise SystemExit(str(exc)) from None
    top = ds.default_ladder.models[-1]
    rows = [r for r in ds.rows if all(m in r.results for m in ds.models)]
    top_total = sum(cost(r, top) for r in rows)
    mean_cost = {m: sum(cost(r, m) for r in rows) / len(rows) for m in ds.models}
    cheap = [m for m in ds.models if m != top and mean_cost[m] <= CHEAP_SHARE * mean_cost[top]]
    kinds = sorted({r.kind for r in rows})
    by_kind = {k: [r for r in rows if r.kind == k] for k in kinds}
    choice = [k for k in kinds if ds.format_of(k) == "choice"]
    other = [k for k in kinds if k not in choice]
    if len(other) != 1 or not choice:
        raise SystemExit(
            f"{ds.name}: this script needs multiple-choice sources and exactly one other "
            f"(RouterBench: ARC, Winogrande and MBPP); found {len(kinds)} kinds"
        )
    target = sum(r.results[top].score for r in rows)
    print(
        f"{ds.name}: {len(rows)} rows; top {top}: {target / len(rows):.3f}; budget "
        f"{args.share:.0%} of its cost; {len(cheap)} cheap models (≤ {CHEAP_SHARE:.0%} of its "
        f"mean cost)"
    )

    print("\n1. does the question's text add to agreement? out-of-fold ROC AUC, best cheap model:")
    frontiers: dict[str, np.ndarray] = {}
    for k in choice:
        rs = by_kind[k]
        letters = {
            m: [answer_of(r.results[m].response or "", "choice") for r in rs] for m in [*cheap, top]
        }
        ranked = sorted(cheap, key=lambda m: -np.mean([r.results[m].score for r in rs]))
        alone, with_text = out_of_fold_auc(rs, ranked[0], ranked[1], letters)
        print(
            f"   {k:14s} {ranked[0]} agreeing with {ranked[1]}: agreement {alone:.3f}, "
            f"+ TF-IDF of question and answer {with_text:.3f}"
        )
        panels = [p for n in range(1, args.panel + 1) for p in itertools.combinations(cheap, n)]
        points = np.vstack(
            [
                panel_frontier(rs, p, top, letters, pool=pool)
                for p in panels
                for pool in (False, True)
            ]
        )
        points = np.vstack(
            [points, [[sum(cost(r, top) for r in rs), sum(r.results[top].score for r in rs)]]]
        )
        frontiers[k] = envelope(points)

    print(
        f"\n2. agreement's in-sample frontier per source ({len(panels)} panels × every "
        f"agreement rule × top alone or pooled with the panel);"
        " cost as share of the top's cost on all rows:"
    )
    for k in choice:
        f = frontiers[k]
        top_q = sum(r.results[top].score for r in by_kind[k])
        marks = [f[np.searchsorted(f[:, 0], s * top_total, side="right") - 1] for s in SHARES]
        print(
            f"   {k:14s} n={len(by_kind[k])}, top {top_q:.0f} correct at "
            f"{sum(cost(r, top) for r in by_kind[k]) / top_total:.1%}; best correct at ≤ "
            + ", ".join(f"{s:.0%}: {q:.0f}" for s, (_, q) in zip(SHARES, marks, strict=True))
        )

    # exact combination of the choice sources' frontiers: best total correct at each cost
    combined = np.array([[0.0, 0.0]])
    for k in choice:
        f = frontiers[k]
        pairs = (combined[:, None, :] + f[None, :, :]).reshape(-1, 2)
        combined = envelope(pairs)
    budget = args.share * top_total
    print(
        f"\n3. with the choice sources at their in-sample best, what {', '.join(other)} "
        f"would need (whole set matching the top: {target:.0f} correct):"
    )
    for k in other:
        ceiling = 0.0
        rs = by_kind[k]
        n = len(rs)
        per_model = sorted(
            (
                (
                    sum(cost(r, m) for r in rs) / top_total,
                    np.mean([r.results[m].score for r in rs]),
                    m,
                )
                for m in ds.models
            ),
            key=lambda t: t[0],
        )
        print(
            f"   {k}: {n} rows; what its models reach"
            " (cost as share of the top's on all rows, accuracy):"
        )
        for c, q, m in per_model:
            print(f"      {m:40s} {c:6.1%}  {q:.3f}")
        oracle = np.mean([max(r.results[m].score for m in cheap) for r in rs])
        reach = perfect_verifier_frontier(rs, cheap, top, args.panel) / np.array([top_total, 1])
        print(f"      oracle over the cheap models: {oracle:.3f} (no cost limit)")
        print(
            f"   {'spent on ' + k:>16s} {'choice sources':>15s} {k + ' needs':>11s} "
            f"{'best model in spend':>20s} {'perfect verifier':>17s}"
        )
        least = None
        for s in sorted({0.005, 0.01, 0.015, 0.02, *np.arange(0.025, args.share + 1e-9, 0.025)}):
            i = np.searchsorted(combined[:, 0], budget - s * top_total, side="right") - 1
            got = combined[i, 1] if i >= 0 else 0.0
            need = (target - got) / n
            single = max((q for c, q, _ in per_model if c <= s + 1e-12), default=0.0)
            j = np.searchsorted(reach[:, 0], s, side="right") - 1
            ideal = reach[j, 1] / n if j >= 0 else 0.0
            print(f"   {s:16.1%} {got:15.0f} {need:11.3f} {single:20.3f} {ideal:17.3f}")
            if ideal >= need and (least is None or need < least[0]):
                least = (need, s, ideal)
            ceiling = max(ceiling, (got + single * n) / len(rows))
        if least is None:
            print(f"\n   out of reach even with a perfect verifier on {k}.")
        else:
            print(
                f"\n   to match the top at ≤ {args.share:.0%}, {k} must reach at least "
                f"{least[0]:.3f} (with {least[1]:.1%} of the budget) — its own top model reaches "
                f"{np.mean([r.results[top].score for r in rs]):.3f}, a perfect verifier over "
                f"up to {args.panel} cheap models {least[2]:.3f}."
            )
        print(
            f"   ceiling of the whole set at ≤ {args.share:.0%} with {k} unverified (the best "
            f"single model its share buys): {ceiling:.3f}; the top model: "
            f"{target / len(rows):.3f}."
        )
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
