"""Where can a 40% budget buy GPT-4's quality? Ideas judged on training rows only.

On the training rows of the default seeded split (the 80% that ``tierwise eval --folds 1``
trains on; its dev rows are never read), the response verifier is fitted by 5-fold
cross-validation, so every training row has an out-of-fold ``P(correct)``; each idea then
chooses its settings on four of those folds and is measured on the fifth (cross-fitted), at
the best quality within ``--share`` of the top tier's cost:

* ``shared``: one threshold per tier (what ships when nothing else wins);
* ``knapsack per source``: a start tier and thresholds per source, the budget spent where the
  marginal quality per dollar is highest (``choose_per_group`` with the budget fill);
* ``ladder per source``: the same knapsack, each source also choosing its ladder among the
  default one and two-tier ladders ``MODEL → top`` (e.g. MBPP: GPT-3.5 → GPT-4);
* ``4-tier ladder``: GPT-3.5 inserted below the top, one ladder for every source.

It also prints how well the verifier separates right from wrong answers per source and tier
(ROC AUC of the out-of-fold probabilities), which bounds what any threshold scheme can buy.

    .venv/bin/python benchmarks/eval_budget_ideas.py [PATH] [--share 0.4]

PATH defaults to ``$TIERWISE_DATA_DIR/routerbench_subset`` (``../shared/data`` from the
repository root when unset). About a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tierwise.evaluation.calibration import (
    CascadeArrays,
    Objective,
    Table,
    choose_per_group,
    choose_shared,
    cross_fit,
    kfold,
    settings_for,
)
from tierwise.evaluation.dataset import Ladder, Row
from tierwise.evaluation.loaders import load_dataset
from tierwise.evaluation.verifier_train import Design

REPO = Path(__file__).resolve().parent.parent
FOLDS = 5
TWO_TIER = ("gpt-3.5-turbo-1106", "zero-one-ai/Yi-34B-Chat", "claude-instant-v1")


def default_path() -> Path:
    base = Path(os.environ.get("TIERWISE_DATA_DIR") or "../shared/data")
    return (base if base.is_absolute() else REPO / base) / "routerbench_subset"


def oof_arrays(
    rows: Sequence[Row], ladder: Ladder, formats: Mapping[str, str], threshold: float
) -> tuple[CascadeArrays, np.ndarray, np.ndarray]:
    """Out-of-fold probabilities of every judged tier, as the verifier's calibration sees them;
    also the fold of each row and whether each judged tier's answer was right."""
    design = Design(rows, ladder, formats, threshold)
    final, _ = design.fit(np.arange(len(rows)), 0.5, 0)
    fold = kfold(rows, FOLDS, 0)
    oof = np.zeros((len(rows), len(ladder) - 1))
    for f in range(FOLDS):
        fitted, held = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        model, columns = design.fit(fitted, 0.5, 0)
        oof[held] = design.probabilities(model, columns, held)
    return final.arrays(rows, oof), fold, design.labels


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.mean() < 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=default_path())
    parser.add_argument("--share", type=float, default=0.4, help="cost budget (share of top)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    ds = load_dataset(args.path)
    train, _dev = ds.partition([0.8, 0.2], seed=0, names=["train", "dev"])
    base = ds.default_ladder
    top = base.models[-1]
    rows = [r for r in train.rows if all(r.results[m].response is not None for m in ds.models)]
    formats = {k: ds.format_of(k) for k in {r.kind for r in rows}}
    sources = sorted({r.kind for r in rows})
    group = np.array([sources.index(r.kind) for r in rows], dtype=np.int64)
    goal = Objective(max_cost_share=args.share)
    ladders = {"default " + base.format(): base}
    for m in TWO_TIER:
        if m in ds.models and m != top:
            ladders[f"{m} → {top}"] = Ladder(("cheap", "strong"), (m, top))
    four = Ladder(("cheap", "mid", "mid2", "strong"), (*base.models[:-1], TWO_TIER[0], top))
    print(f"{ds.name}: {len(rows)} training rows of the seeded split (dev rows not read)")
    tables: dict[str, Table] = {}
    print(f"\nverifier ROC AUC per source, out of fold ({', '.join(sources)}):")
    for name, ladder in [*ladders.items(), ("4-tier " + four.format(), four)]:
        arrays, fold, labels = oof_arrays(rows, ladder, formats, ds.pass_threshold)
        for i, model in enumerate(ladder.models[:-1]):
            per = [
                auc(labels[group == g, i], arrays.probs[group == g, i]) for g in range(len(sources))
            ]
            print(
                f"  {name[:48]:48s} judging {model[:28]:28s} " + " ".join(f"{a:.3f}" for a in per)
            )
        starts = np.array(
            [
                len(ladder) - 2 if formats[r.kind] == "choice" and len(ladder) > 2 else 0
                for r in rows
            ],
            dtype=np.int64,
        )
        settings = settings_for(len(ladder), range(len(ladder) - 1))
        shared, per_source = Table.build(
            arrays, settings, fold, [(starts, len(ladder) - 1), (group, len(sources))], FOLDS
        )
        tables[name] = per_source
        if name.startswith("default"):
            tables["shared"] = shared
            shared_starts = list(range(len(ladder) - 1))
        if name.startswith("4-tier"):
            tables["4-tier"] = per_source

    def report(label: str, table: Table, choose: object) -> None:
        q, c, tq, tc = cross_fit(lambda f: table, FOLDS, choose)
        print(f"  {label:58s} {q:.4f}  {c / tc:6.1%}   (top {tq:.4f})")

    print(f"\ncross-fitted (chosen on 4 inner folds, measured on the 5th), ≤ {args.share:.0%}:")
    report(
        "shared thresholds, default ladder",
        tables["shared"],
        lambda t, on: choose_shared(t, on, shared_starts, goal),
    )
    default = next(n for n in ladders if n.startswith("default"))
    report(
        "knapsack per source, default ladder",
        tables[default],
        lambda t, on: choose_per_group(t, on, goal),
    )
    report(
        "knapsack per source, 4-tier ladder",
        tables["4-tier"],
        lambda t, on: choose_per_group(t, on, goal),
    )
    # Every source may take any setting of any ladder.
    parts = [tables[n] for n in ladders]
    stacked = Table.stack(parts)
    report(
        "knapsack per source, ladder per source",
        stacked,
        lambda t, on: choose_per_group(t, on, goal),
    )
    everything = np.ones(FOLDS, dtype=bool)
    choice = choose_per_group(stacked, everything, goal)
    bounds = np.cumsum([0] + [len(t.settings) for t in parts])
    for g, s in enumerate(choice.per_group):
        which = int(np.searchsorted(bounds, s, side="right") - 1)
        print(f"    {sources[g]:16s} ladder {list(ladders)[which]}")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
