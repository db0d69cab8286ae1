"""The neutral form every evaluation dataset is loaded into.

A :class:`Dataset` is a list of :class:`Row` s: one prompt (its text when the source has it), its
task kind, and per model a :class:`ModelResult` — the recorded score scaled to 0..1, the response
text when present, and the cost in USD or the tokens it can be priced from. Loaders in
:mod:`tierwise.evaluation.loaders` turn each source format into this form; everything downstream
(replay, strategies, metrics) reads only this form.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from tierwise.errors import TierwiseError

AnswerFormat = str  # "choice" | "code" | "number" | "text"


class DatasetError(TierwiseError):
    """A dataset folder is missing, unreadable or in no format tierwise knows."""


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One model's recorded answer to one prompt.

    ``score`` is the recorded quality in 0..1 (0/1 correctness, or a judge score scaled).
    ``cost_usd`` is the recorded or priced cost of the call, ``None`` when unknown; tokens are
    the provider's counts or estimates (characters / 4) when the source had none.
    """

    score: float
    response: str | None = None
    cost_usd: Decimal | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """What the policy in force did with a row's task when it ran live (ledger exports only).

    ``tiers`` are the ladder tiers its run tried, in order; ``tier``/``model`` the answer it
    delivered (``None`` when every tier failed); ``score`` that answer's (0 when none, or when
    someone flagged it wrong); ``cost_usd`` what the task cost its caller, failed attempts and
    validator calls included (shadow calls excluded).
    """

    tier: str | None
    model: str | None
    score: float
    cost_usd: Decimal | None
    tiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Row:
    """One prompt and every model's recorded result for it.

    ``kind`` is the task kind (the benchmark or its category); ``source`` the benchmark the row
    comes from when a dataset mixes several (RouteLLM's MMLU, GSM8K, MT-Bench); ``split`` the
    split file it was read from (``train``, ``test`` or ``""``).
    """

    prompt_id: str
    prompt: str | None
    kind: str
    results: Mapping[str, ModelResult]
    split: str = ""
    source: str = ""
    served: Served | None = None


@dataclass(frozen=True, slots=True)
class Ladder:
    """Tier names bottom to top, each mapped to one model of the dataset."""

    tiers: tuple[str, ...]
    models: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.tiers) != len(self.models) or not self.tiers:
            raise ValueError("a ladder needs one model per tier and at least one tier")
        if len(set(self.tiers)) != len(self.tiers):
            raise ValueError(f"tier names repeat in {', '.join(self.tiers)}")

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Ladder:
        """Build from ``(tier, model)`` pairs, bottom first."""
        items = list(pairs)
        return cls(tuple(t for t, _ in items), tuple(m for _, m in items))

    @classmethod
    def parse(cls, text: str) -> Ladder:
        """Parse ``cheap=MODEL,mid=MODEL,strong=MODEL`` (bottom first).

        Raises:
            ValueError: an item is not ``NAME=MODEL`` or a name repeats.
        """
        pairs = []
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            name, sep, model = item.partition("=")
            if not sep or not name.strip() or not model.strip():
                raise ValueError(f"expected NAME=MODEL in --tiers, found {item!r}")
            pairs.append((name.strip(), model.strip()))
        if not pairs:
            raise ValueError("--tiers is empty; expected cheap=MODEL,...,strong=MODEL")
        return cls.of(pairs)

    def model(self, tier: str) -> str:
        """The model serving *tier*."""
        return self.models[self.tiers.index(tier)]

    @property
    def top(self) -> str:
        return self.tiers[-1]

    @property
    def bottom(self) -> str:
        return self.tiers[0]

    def __len__(self) -> int:
        return len(self.tiers)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(zip(self.tiers, self.models, strict=True))

    def format(self) -> str:
        return ",".join(f"{t}={m}" for t, m in self)


@dataclass(frozen=True, slots=True)
class Dataset:
    """Rows of recorded multi-model results, with what a loader knows about them.

    Attributes:
        name: the format's name (``routerbench``, ``routellm``, ...).
        rows: the prompts, in file order.
        models: every model with results, in the source's order.
        default_ladder: the loader's sensible tiers for these models.
        split: the split that was read (``train``, ``test``) or ``None`` for everything.
        path: the folder it came from.
        formats: answer format per kind (``choice``, ``code``, ``number``, ``text``), which
            decides the validators a replayed cascade uses.
        pass_threshold: the score at or above which an answer counts as correct (0/1 data: any
            value in (0, 1]; judge scores: e.g. 0.7).
        notes: provenance and caveats to print with results (cost source, dropped rows, ...).
    """

    name: str
    rows: tuple[Row, ...]
    models: tuple[str, ...]
    default_ladder: Ladder
    split: str | None = None
    path: str = ""
    formats: Mapping[str, AnswerFormat] = field(default_factory=dict)
    pass_threshold: float = 0.5
    notes: tuple[str, ...] = ()
    _index: dict[str, Row] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {r.prompt_id: r for r in self.rows})
        if len(self._index) != len(self.rows):
            raise DatasetError(f"{self.name}: prompt ids repeat; each row needs its own id")

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, prompt_id: str) -> Row:
        """The row with *prompt_id*; raises ``KeyError`` when there is none."""
        return self._index[prompt_id]

    @property
    def has_text(self) -> bool:
        """Whether prompts carry text (a learned router needs it)."""
        return any(r.prompt for r in self.rows)

    def has_responses(self, models: Iterable[str]) -> bool:
        """Whether every given model has response text on (almost) every row."""
        wanted = list(models)
        if not self.rows:
            return False
        with_text = sum(
            all(r.results[m].response is not None for m in wanted if m in r.results)
            for r in self.rows
        )
        return with_text >= 0.95 * len(self.rows)

    def has_cost(self, models: Iterable[str]) -> bool:
        """Whether every given model has a cost on every row."""
        wanted = list(models)
        return bool(self.rows) and all(
            r.results[m].cost_usd is not None for r in self.rows for m in wanted
        )

    def format_of(self, kind: str) -> AnswerFormat:
        return self.formats.get(kind, "text")

    def with_rows(self, rows: Iterable[Row], split: str | None = None) -> Dataset:
        """The same dataset over other rows (a split, a sample)."""
        return replace(self, rows=tuple(rows), split=self.split if split is None else split)

    def with_notes(self, *notes: str) -> Dataset:
        return replace(self, notes=(*self.notes, *notes))

    def complete_for(self, models: Sequence[str]) -> Dataset:
        """Only the rows where every model in *models* has a result."""
        return self.with_rows(r for r in self.rows if all(m in r.results for m in models))

    def head(self, n: int) -> Dataset:
        """The first *n* rows."""
        return self.with_rows(self.rows[:n])

    def sample(self, n: int, seed: int = 0) -> Dataset:
        """*n* rows drawn without replacement (seeded), kept in file order."""
        if n >= len(self.rows):
            return self
        picked = sorted(random.Random(seed).sample(range(len(self.rows)), n))
        return self.with_rows(self.rows[i] for i in picked)

    def split_by_name(self, split: str) -> Dataset:
        """Only the rows read from the *split* files."""
        return self.with_rows((r for r in self.rows if r.split == split), split=split)

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names present, in first-seen order (``""`` for unsplit files)."""
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.setdefault(r.split, None)
        return tuple(seen)

    def partition(
        self, fractions: Sequence[float], seed: int = 0, names: Sequence[str] | None = None
    ) -> tuple[Dataset, ...]:
        """Split the rows at random (seeded) into parts of the given fractions.

        Rows of the same kind are spread evenly (stratified), so a small part still holds
        every kind.
        """
        if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
            raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
        rng = random.Random(seed)
        by_kind: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            by_kind.setdefault(r.kind, []).append(i)
        parts: list[list[int]] = [[] for _ in fractions]
        for kind in sorted(by_kind):
            idx = by_kind[kind]
            rng.shuffle(idx)
            bounds = _bounds(len(idx), fractions)
            for p, (lo, hi) in enumerate(bounds):
                parts[p].extend(idx[lo:hi])
        labels = list(names) if names is not None else [f"part{i}" for i in range(len(parts))]
        return tuple(
            self.with_rows((self.rows[i] for i in sorted(p)), split=label)
            for p, label in zip(parts, labels, strict=True)
        )


def _bounds(n: int, fractions: Sequence[float]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    acc = 0.0
    lo = 0
    for i, f in enumerate(fractions):
        acc += f
        hi = n if i == len(fractions) - 1 else round(acc * n)
        out.append((lo, hi))
        lo = hi
    return out


def passed(result: ModelResult, threshold: float) -> bool:
    """Whether a recorded answer counts as correct."""
    return result.score >= threshold


def missing_data_error(path: str, what: str) -> DatasetError:
    """The error for a dataset that is not there, saying where to get the data."""
    return DatasetError(
        f"{what}: {path} does not exist. The recorded multi-model results tierwise evaluates "
        "on are public: RouterBench (github.com/withmartian/routerbench, or RouterDC's CSVs), "
        "RouteLLM (github.com/lm-sys/RouteLLM, routellm/evals), MMLU-Pro "
        "(github.com/TIGER-AI-Lab/MMLU-Pro, eval_results), RouterArena "
        "(github.com/RouteWorks/RouterArena, cached_results) and WildBench "
        "(github.com/allenai/WildBench, eval_results); or write your own records in tierwise's "
        "JSONL format (docs/eval-format.md) or with `tierwise ledger export`. Point "
        "`tierwise eval` at the folder that holds them."
    )
