"""Offline evaluation: replay recorded multi-model results through the cascade.

```python
from tierwise.evaluation import evaluate, load_dataset

dataset = load_dataset("data/routerbench_subset")      # format recognised from content
report = evaluate("data/routerbench_subset", train="data/routerbench_subset")
[(s.name, s.quality.value, s.cost_share) for s in report.strategies]
```

Modules: :mod:`~tierwise.evaluation.dataset` (the neutral form), :mod:`~.loaders` (one per
source format), :mod:`~.prices` (costing results recorded without one, a priced default
ladder), :mod:`~.checks` (validators for benchmark answers), :mod:`~.strategies`,
:mod:`~.learned` (the TF-IDF + logistic-regression router), :mod:`~.live` (both used by the
live cascade: :func:`load_learned`), :mod:`~.export` (the ledger as recorded results, shadow
answers included), :mod:`~.verifier` (the learned
response verifier, a cascade validator) with :mod:`~.verifier_features` and
:mod:`~.verifier_train`, :mod:`~.calibration` (cross-validated calibration, the vectorised
cascade simulation), :mod:`~.folds` (train and replay one fold), :mod:`~.metrics` (CIs, APGR,
CPT, fold figures), :mod:`~.routing` (RouteLLM's curves), :mod:`~.report` (:func:`evaluate`)
and :mod:`~.plot`. numpy, scikit-learn and matplotlib (the ``eval`` extra) are imported only by
the modules that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, ModelResult, Row
from tierwise.evaluation.loaders import detect_format, dump_rows, load_dataset

if TYPE_CHECKING:
    from tierwise.evaluation.learned import LearnedRouter
    from tierwise.evaluation.live import LearnedModels, load_learned
    from tierwise.evaluation.report import EvalReport, evaluate
    from tierwise.evaluation.verifier import ResponseVerifier

__all__ = [
    "Dataset",
    "DatasetError",
    "EvalReport",
    "Ladder",
    "LearnedModels",
    "LearnedRouter",
    "ModelResult",
    "ResponseVerifier",
    "Row",
    "detect_format",
    "dump_rows",
    "evaluate",
    "load_dataset",
    "load_learned",
]

_LAZY = {
    "EvalReport": "tierwise.evaluation.report",
    "evaluate": "tierwise.evaluation.report",
    "LearnedRouter": "tierwise.evaluation.learned",
    "ResponseVerifier": "tierwise.evaluation.verifier",
    "LearnedModels": "tierwise.evaluation.live",
    "load_learned": "tierwise.evaluation.live",
}


def __getattr__(name: str) -> Any:
    """Import the numpy/scikit-learn parts on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tierwise.evaluation' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
