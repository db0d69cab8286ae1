"""Replay throughput: ledger rows committed in batches vs one commit per row (same run).

tierwise eval commits replayed rows ``BATCH_ROWS`` at a time; this measures what that buys
over the per-row commits live traffic uses, and what the ledger costs over no ledger at all.

    .venv/bin/python benchmarks/eval_replay.py [PATH] [ROWS]

PATH defaults to ``$TIERWISE_DATA_DIR/routerbench_subset`` (``../shared/data`` from the
repository root when unset).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from tierwise.evaluation import strategies
from tierwise.evaluation.loaders import load_dataset
from tierwise.evaluation.strategies import Replayer, eval_policy, fit_kind_tiers
from tierwise.ledger import open_ledger


def main() -> None:
    base = Path(os.environ.get("TIERWISE_DATA_DIR") or "../shared/data")
    base = base if base.is_absolute() else Path(__file__).resolve().parent.parent / base
    path = sys.argv[1] if len(sys.argv) > 1 else str(base / "routerbench_subset")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    ds = load_dataset(path)
    ds = ds.sample(min(n, len(ds)), seed=0)
    ladder = ds.default_ladder
    policy = eval_policy(ds, ladder, kind_tiers=fit_kind_tiers(ds.rows, ladder))
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, batch in (("per-row commits", 1), ("batched", strategies.BATCH_ROWS)):
            strategies.BATCH_ROWS = batch
            with open_ledger(Path(tmp) / f"{batch}.db") as ledger:
                replayer = Replayer(ds, ladder, ledger=ledger, run_id=label[:3])
                t0 = time.perf_counter()
                replayer.run("policy", policy, ds.rows)
                timings[label] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Replayer(ds, ladder, ledger=None).run("policy", policy, ds.rows)
    timings["no ledger"] = time.perf_counter() - t0
    for label, seconds in timings.items():
        print(
            f"{label:16s} {len(ds) / seconds:9.0f} rows/s  ({seconds * 1000 / len(ds):.3f} ms/row)"
        )
    ratio = timings["per-row commits"] / timings["batched"]
    print(f"batched commits are {ratio:.1f}x faster than per-row commits on {len(ds)} rows")


if __name__ == "__main__":
    main()
