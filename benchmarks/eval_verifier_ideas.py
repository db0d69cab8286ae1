"""Which verifier ideas win on rows they were not fitted on? (training rows only)

For each variant, the response verifier is trained with k-fold cross-validation inside the
training rows of the default seeded split (the 80% that ``tierwise eval --folds 1`` trains on;
its 20% dev rows are never read here), and judged on folds it was not fitted or calibrated on:

* the ladder alone (the baseline), with its four calibration schemes (shared thresholds, per
  source, and both on isotonic-calibrated probabilities);
* a consensus panel: one or two more cheap models placed below the ladder, so that every
  multiple-choice answer is checked for agreement with all of them — each of them asked, priced
  and paid for on every row that consults them (mixture-of-thoughts-style consistency with
  several models instead of several samples).

It prints, per variant, the mean held-out quality over 10–100% of the top tier's cost (the
"curve", as the verifier's scheme selection uses it), and the held-out quality and cost share
when calibrated for the best quality at ≤ 40% of the top tier's cost, next to the top tier's.
The baseline is the first row; a variant wins only with a higher curve.

    .venv/bin/python benchmarks/eval_verifier_ideas.py [PATH] [--panel MODEL ...]

PATH defaults to ``$TIERWISE_DATA_DIR/routerbench_subset`` (``../shared/data`` from the
repository root when unset).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

from tierwise.evaluation.calibration import Objective
from tierwise.evaluation.dataset import Ladder
from tierwise.evaluation.loaders import load_dataset
from tierwise.evaluation.verifier import ResponseVerifier

REPO = Path(__file__).resolve().parent.parent
CHEAP = (
    "mistralai/mistral-7b-chat",
    "WizardLM/WizardLM-13B-V1.2",
    "claude-instant-v1",
    "gpt-3.5-turbo-1106",
    "meta/llama-2-70b-chat",
)


def default_path() -> Path:
    base = Path(os.environ.get("TIERWISE_DATA_DIR") or "../shared/data")
    return (base if base.is_absolute() else REPO / base) / "routerbench_subset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=default_path())
    parser.add_argument("--panel", nargs="*", default=list(CHEAP), help="candidate panel models")
    parser.add_argument("--pairs", action="store_true", help="also try every pair of them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ds = load_dataset(args.path)
    train, _dev = ds.partition([0.8, 0.2], seed=args.seed, names=["train", "dev"])
    rows = list(train.rows)
    base = ds.default_ladder
    formats = {k: ds.format_of(k) for k in {r.kind for r in rows}}
    singles = [m for m in args.panel if m in ds.models and m not in base.models]
    panels: list[tuple[str, ...]] = [(), *((m,) for m in singles)]
    if args.pairs:
        panels += list(itertools.combinations(singles, 2))
    print(f"{ds.name}: training rows of the seeded split: {len(rows)} (dev rows not read)")
    print(
        f"{'variant':58s} {'scheme kept':22s} {'curve':>6s}  {'≤40%: quality':>13s} "
        f"{'share':>6s} {'top':>6s}  s"
    )
    baseline = None
    for panel in panels:
        ladder = Ladder(
            tuple(f"panel{i}" for i in range(len(panel))) + base.tiers, tuple(panel) + base.models
        )
        t0 = time.perf_counter()
        verifier = ResponseVerifier.train(
            rows,
            ladder,
            formats,
            threshold=ds.pass_threshold,
            seed=args.seed,
            objective=Objective(max_cost_share=0.4),
        )
        cal = verifier.calibration
        assert cal is not None and cal.held_out_quality is not None
        assert cal.held_out_cost is not None
        shared = cal.schemes[0]
        best = max(cal.schemes, key=lambda s: s.area)
        name = "ladder " + base.format() if not panel else "+ panel " + ", ".join(panel)
        if baseline is None:
            baseline = shared.area
            for s in cal.schemes:
                print(
                    f"  {'ladder, ' + s.name:56s} {'':22s} {s.area:6.3f}  {s.quality:13.3f} "
                    f"{s.cost / s.top_cost:6.1%} {s.top_quality:6.3f}"
                )
        print(
            f"{name[:58]:58s} {cal.scheme:22s} {best.area:6.3f}  {cal.held_out_quality:13.3f} "
            f"{cal.held_out_cost / cal.top_cost:6.1%} {cal.top_quality:6.3f}  "
            f"{time.perf_counter() - t0:.0f}"
            + (f"  Δcurve {best.area - baseline:+.4f}" if panel else "")
        )


if __name__ == "__main__":
    main()
