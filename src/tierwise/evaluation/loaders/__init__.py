"""Loaders: recorded multi-model results in each known format → the neutral :class:`Dataset`.

:func:`load_dataset` recognises a folder's format from its content (headers, keys, values),
never from the folder's name, and reads whatever split files it holds.

============== =================================================================================
``routerbench`` RouterBench CSVs: 0/1 scores, responses, recorded USD per call
``mmlu_pro``    MMLU-Pro wide tables: 0/1, predicted letters, output lengths, question texts
``routellm``    RouteLLM: MMLU / GSM8K CSVs and MT-Bench judgements, contaminated prompts dropped
``routerarena`` RouterArena cached results: scores, responses, tokens and USD
``wildbench``   WildBench judge scores 1–10 and output lengths, no prompt text
``jsonl``       tierwise's own JSONL (``docs/eval-format.md``), e.g. ``tierwise ledger export``
============== =================================================================================
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tierwise.evaluation.dataset import Dataset, DatasetError, missing_data_error
from tierwise.evaluation.loaders import (
    jsonl,
    mmlu_pro,
    routellm,
    routerarena,
    routerbench,
    wildbench,
)
from tierwise.evaluation.loaders.jsonl import dump_rows, row_to_json

#: Checked in this order; the first whose ``detect`` accepts the folder loads it.
LOADERS: tuple[ModuleType, ...] = (jsonl, routerbench, mmlu_pro, routerarena, wildbench, routellm)

__all__ = ["LOADERS", "detect_format", "dump_rows", "load_dataset", "row_to_json"]


def detect_format(path: str | Path) -> str:
    """The name of the format *path* holds.

    Raises:
        DatasetError: the path does not exist, or holds no format tierwise knows.
    """
    return _loader(Path(path)).NAME  # type: ignore[no-any-return]


def _loader(path: Path) -> ModuleType:
    if not path.exists():
        raise missing_data_error(str(path), "no dataset")
    for loader in LOADERS:
        if loader.detect(path):
            return loader
    raise DatasetError(
        f"{path}: no known results format here. Expected RouterBench CSVs, MMLU-Pro wide tables, "
        "RouteLLM CSVs or judgements, RouterArena or tierwise JSONL, or WildBench score tables "
        "(see docs/eval-format.md)"
    )


def load_dataset(path: str | Path, split: str | None = None) -> Dataset:
    """Load the recorded results at *path* into the neutral form.

    Args:
        path: a folder (or a tierwise JSONL file).
        split: read only this split's files (``train``, ``test``); ``None`` reads them all.

    Raises:
        DatasetError: the path is missing (the message says where to get data), its format is
            unknown, or the requested split is not there.
    """
    p = Path(path)
    loader = _loader(p)
    try:
        dataset: Dataset = loader.load(p, split)
    except (OSError, UnicodeDecodeError, KeyError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(
            f"{p}: cannot read {loader.NAME} data: {type(exc).__name__}: {exc}"
        ) from None
    if not dataset.rows:
        raise DatasetError(f"{p}: the {loader.NAME} files hold no rows")
    return dataset
