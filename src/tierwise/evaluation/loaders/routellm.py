"""RouteLLM's evaluation data (lm-sys/RouteLLM ``routellm/evals``): two models, three benchmarks.

* MMLU: CSVs ``prompt, <weak>, <strong>`` with ``True``/``False`` correctness, one per domain
  (``mmlu_anatomy.csv``); kind ``mmlu:<domain>``. No answers are recorded, but RouteLLM's
  generator (``routellm/evals/mmlu/generate_responses.py``) asked for one new token
  (``max_new_tokens=1``), so each call is priced as the question's tokens in and one token out;
  its 5-shot prefix (up to 1,536 tokens) is not in the files, so these costs are a lower bound.
* GSM8K: a CSV ``prompt, <weak>, <strong>, <weak>_response, <strong>_response``; kind ``gsm8k``.
* MT-Bench: ``judgements.jsonl`` (GPT-4 judge, score 1–10 per question, turn and model, scaled
  to 0–1 by /10) with ``question.jsonl`` for the text; kind ``mt-bench:<category>``. The judge's
  prompt quotes the answer it graded (and, for turn 2, the whole conversation), so the answer
  text and its tokens are read from there.

Prompts RouteLLM found overlapping its router training data (``contaminated_prompts.jsonl``,
``eval_prompt`` field) are dropped first, as RouteLLM's own evaluator does; an MT-Bench question
is dropped when either of its turns is listed. The folder may hold any of the three, at its top
or one level down.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from tierwise.evaluation.dataset import Dataset, DatasetError, Ladder, ModelResult, Row
from tierwise.evaluation.loaders._util import (
    csv_header,
    csv_rows,
    estimate_tokens,
    files,
    first_json_line,
    pick_split,
    split_of,
)

NAME = "routellm"
#: Tokens RouteLLM's MMLU generator let each model write (``max_new_tokens=1``).
MMLU_OUTPUT_TOKENS = 1
_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
_STRONG = "gpt-4-1106-preview"


def _folders(path: Path) -> Iterator[Path]:
    yield path
    yield from sorted(p for p in path.iterdir() if p.is_dir())


def _kind_of(path: Path) -> str | None:
    """``mmlu``, ``gsm8k`` or ``judgements`` for a RouteLLM file, judged by its content."""
    if path.suffix == ".csv":
        header = csv_header(path)
        if not header or header[0] != "prompt" or len(header) < 3:
            return None
        models = [h for h in header[1:] if not h.endswith("_response")]
        responses = [h for h in header[1:] if h.endswith("_response")]
        if len(models) != 2:
            return None
        for rec in csv_rows(path):
            if any(rec[m] not in ("True", "False") for m in models):
                return None
            break
        if responses and all(f"{m}_response" in header for m in models):
            return "gsm8k"
        return "mmlu" if not responses else None
    if path.suffix == ".jsonl":
        head = first_json_line(path)
        if head and {"question_id", "model", "score", "turn"} <= head.keys():
            return "judgements"
    return None


def _contaminated(folder: Path) -> set[str]:
    out: set[str] = set()
    for p in files(folder, "*.jsonl"):
        head = first_json_line(p)
        if head and "eval_prompt" in head:
            with p.open(encoding="utf-8") as fh:
                out.update(json.loads(line)["eval_prompt"] for line in fh if line.strip())
    return out


def _scan(path: Path) -> list[tuple[str, Path]]:
    found = []
    for folder in _folders(path):
        for p in [*files(folder, "*.csv"), *files(folder, "*.jsonl")]:
            kind = _kind_of(p)
            if kind is not None:
                found.append((kind, p))
    return found


def detect(path: Path) -> bool:
    """A folder (or a subfolder) with RouteLLM's MMLU/GSM8K CSVs or MT-Bench judgements."""
    for folder in _folders(path):
        for p in [*files(folder, "*.csv"), *files(folder, "*.jsonl")]:
            if _kind_of(p) is not None:
                return True
    return False


def load(path: Path, split: str | None = None) -> Dataset:
    """Read every RouteLLM benchmark in *path*, contaminated prompts dropped."""
    found = _scan(path)
    if not found:
        raise DatasetError(f"{path}: no RouteLLM result files found")
    pick_split([split_of(p) for _, p in found], split, path)
    rows: list[Row] = []
    dropped: dict[str, int] = defaultdict(int)
    models: list[str] = []
    bad: set[str] = set()
    for folder in {p.parent for _, p in found}:
        bad |= _contaminated(folder)
    judgements: list[Path] = []
    for kind, file in found:
        if split is not None and split_of(file) != split:
            continue
        if kind == "judgements":
            judgements.append(file)
            continue
        new, n = _csv(file, kind, bad)
        dropped[kind] += n
        rows.extend(new)
    if judgements:
        new, n = _mt_bench(judgements, bad)
        dropped["mt-bench"] += n
        rows.extend(new)
    for r in rows:
        for m in r.results:
            if m not in models:
                models.append(m)
    weak, strong = _pair(models)
    notes = [f"contaminated prompts dropped: {dict(sorted(dropped.items()))}"]
    notes.append(
        "cost: tokens (characters / 4) priced by --prices or the catalog; GSM8K and MT-Bench "
        "from the recorded answers (MT-Bench turn 2 includes turn 1 as input); MMLU as the "
        "question in and one token out (RouteLLM generated a single token; the 5-shot prefix "
        "is not recorded, so MMLU costs are a lower bound)"
    )
    formats = {}
    for r in rows:
        formats[r.kind] = {"mmlu": "choice", "gsm8k": "number"}.get(r.source, "text")
    return Dataset(
        name=NAME,
        rows=tuple(rows),
        models=tuple(models),
        default_ladder=Ladder(("cheap", "strong"), (weak, strong)),
        split=split,
        path=str(path),
        formats=formats,
        pass_threshold=0.5,
        notes=tuple(notes),
    )


def _pair(models: list[str]) -> tuple[str, str]:
    if _WEAK in models and _STRONG in models:
        return _WEAK, _STRONG
    if len(models) < 2:
        raise DatasetError("RouteLLM data needs two models; found " + ", ".join(models))
    return models[0], models[1]


def _csv(file: Path, kind: str, bad: set[str]) -> tuple[list[Row], int]:
    header = csv_header(file)
    models = [h for h in header[1:] if not h.endswith("_response")]
    domain = file.stem.removeprefix("mmlu_") if kind == "mmlu" else ""
    task_kind = f"mmlu:{domain}" if kind == "mmlu" else "gsm8k"
    rows: list[Row] = []
    dropped = 0
    for i, rec in enumerate(csv_rows(file)):
        prompt = rec["prompt"]
        if prompt in bad:
            dropped += 1
            continue
        results = {}
        for m in models:
            response = rec.get(f"{m}_response")
            results[m] = ModelResult(
                score=1.0 if rec[m] == "True" else 0.0,
                response=response,
                input_tokens=estimate_tokens(prompt),
                # MMLU answers are one generated token (RouteLLM's max_new_tokens=1).
                output_tokens=estimate_tokens(response) if kind == "gsm8k" else MMLU_OUTPUT_TOKENS,
            )
        pid = f"{task_kind}/{i}"
        rows.append(Row(pid, prompt, task_kind, results, split=split_of(file), source=kind))
    return rows, dropped


def _mt_bench(judgement_files: list[Path], bad: set[str]) -> tuple[list[Row], int]:
    """Rows per (question, turn) from every judgement file (RouteLLM's pair, and the Martian and
    Unify routers' judgements when present); question text from any ``question.jsonl`` nearby."""
    questions: dict[str, dict[str, object]] = {}
    for folder in {f.parent for f in judgement_files} | {f.parent.parent for f in judgement_files}:
        for p in [*files(folder, "*.jsonl"), *files(folder, "*/*.jsonl")]:
            head = first_json_line(p)
            if head and {"question_id", "turns", "category"} <= head.keys():
                with p.open(encoding="utf-8") as fh:
                    for line in fh:
                        if line.strip():
                            q = json.loads(line)
                            questions[str(q["question_id"])] = q
    scores: dict[tuple[str, int], dict[str, ModelResult]] = defaultdict(dict)
    split = split_of(judgement_files[0])
    for file in judgement_files:
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                j = json.loads(line)
                score = float(j["score"])
                if score < 0:  # FastChat writes -1 when the judge gave no rating
                    continue
                turn = int(j["turn"])
                answer, context = judged_answer(str(j.get("user_prompt") or ""), turn)
                scores[(str(j["question_id"]), turn)][str(j["model"])] = ModelResult(
                    score=score / 10,
                    response=answer,
                    input_tokens=estimate_tokens(context),
                    output_tokens=estimate_tokens(answer),
                )
    rows: list[Row] = []
    dropped_q: set[str] = set()
    for (qid, turn), by_model in sorted(scores.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
        q = questions.get(qid, {})
        raw_turns = q.get("turns", [])
        turns = [str(t) for t in raw_turns] if isinstance(raw_turns, list) else []
        if any(t in bad for t in turns):
            dropped_q.add(qid)
            continue
        prompt = turns[turn - 1] if len(turns) >= turn else None
        kind = f"mt-bench:{q.get('category', 'unknown')}"
        results = {
            m: res
            if res.input_tokens is not None
            else replace(res, input_tokens=estimate_tokens(prompt))
            for m, res in by_model.items()
        }
        rows.append(Row(f"mt-bench/{qid}/{turn}", prompt, kind, results, split, "mt-bench"))
    return rows, len(dropped_q)


_SINGLE_ANSWER = re.compile(
    r"\[The Start of Assistant's Answer\]\n(.*?)\n?\[The End of Assistant's Answer\]", re.S
)
_CONVERSATION = re.compile(
    r"<\|The Start of Assistant A's Conversation with User\|>\n(.*?)"
    r"<\|The End of Assistant A's Conversation with User\|>",
    re.S,
)
_ASSISTANT = "### Assistant A:\n"


def judged_answer(judge_prompt: str, turn: int) -> tuple[str | None, str | None]:
    """The answer an MT-Bench judge graded, and the text the model was given, from the judge's
    prompt (FastChat's ``single-v1`` / ``single-math-v1`` and their ``-multi-turn`` forms).

    Turn 1: the text between ``[The Start of Assistant's Answer]`` and its end marker; the
    question is the input. Turn 2: the last ``### Assistant A:`` block of the quoted
    conversation; the conversation before it (both questions and the first answer) is the
    input. ``(None, None)`` when the prompt quotes no answer.
    """
    if turn <= 1:
        found = _SINGLE_ANSWER.search(judge_prompt)
        if found is None:
            return None, None
        question = judge_prompt[: found.start()].rsplit("[Question]\n", 1)[-1]
        return found.group(1).strip(), question.strip()
    convo = _CONVERSATION.search(judge_prompt)
    if convo is None or _ASSISTANT not in convo.group(1):
        return None, None
    before, _, answer = convo.group(1).rpartition(_ASSISTANT)
    return answer.strip(), before.strip()
