"""Route decisions per second with the saved learned router in the loop, next to the rules alone;
and what one ``learned`` validator check (the saved response verifier) costs.

A router is trained and saved the way ``tierwise eval --save-router`` saves it (TF-IDF of the
kind and the prompt, one logistic regression per tier; JSON), loaded with
:func:`tierwise.evaluation.load_learned` for a policy whose kind starts ``learned``, and asked by
the cascade's own decision step (:meth:`Cascade.decide <tierwise.cascade.Cascade.decide>`: the
saved router proposes, floors and frontier pins hold). The baseline is the same cascade and
tasks with the rules deciding (``start = "routed"``), measured in the same run. Prompts are
synthetic but realistic in size (200–2,000 characters, a few hundred distinct words), seeded.

Optionally ``--data DIR`` trains on a recorded benchmark folder instead (e.g.
``../shared/data/routerbench_subset``: its prompts are then the decided tasks too).

Run: .venv/bin/python benchmarks/learned_routing.py [--tasks 2000] [--rounds 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from tierwise.cascade import Cascade
from tierwise.evaluation import load_learned
from tierwise.evaluation.dataset import Ladder, ModelResult, Row
from tierwise.evaluation.learned import LearnedRouter
from tierwise.policy import loads_policy
from tierwise.task import Task

TIERS = (("cheap", "claude-haiku-4-5"), ("mid", "claude-sonnet-4-6"), ("strong", "claude-opus-4-6"))
WORDS = [f"w{i}" for i in range(400)] + ["prove", "lemma", "invoice", "total", "refactor"]


def synthetic_rows(n: int, seed: int) -> list[Row]:
    """Prompts whose words say how hard they are; harder ones pass only on higher tiers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        hard = rng.random()
        words = rng.choices(WORDS, k=rng.randint(40, 300))
        if hard > 0.7:
            words += ["prove", "lemma"] * 3
        text = " ".join(words)
        scores = (float(hard < 0.4), float(hard < 0.7), 1.0)
        answers = [
            f"the answer is {'right' if ok else 'a guess'} " * rng.randint(1, 20) for ok in scores
        ]
        results = {
            m: ModelResult(sc, response=a)
            for (_, m), sc, a in zip(TIERS, scores, answers, strict=True)
        }
        rows.append(Row(f"r{i}", text, "qa", results))
    return rows


def policy_text(router: Path, start: str, ladder: Ladder) -> str:
    tiers = "".join(
        f'\n[[tiers]]\nname = "{t}"\nprovider = "anthropic"\nmodel = "{m}"\n' for t, m in ladder
    )
    # prices only make the policy load (benchmark models may have none); nothing is called
    prices = "".join(f'\n[prices."{m}"]\ninput = 1\noutput = 1\n' for m in ladder.models)
    return (
        f'version = 1\n{tiers}\n[learned]\npath = "{router}"\n'
        f'[kinds.qa]\nstart = "{start}"\ndoubt = "cheap"\n{prices}'
    )


def rate(cascade: Cascade, tasks: list[Task], rounds: int) -> tuple[float, Counter[str]]:
    """Best of *rounds* passes in decisions per second, and where the last pass sent tasks."""
    best, tiers = float("inf"), Counter[str]()
    for _ in range(rounds):
        tiers = Counter()
        start = time.perf_counter()
        for task in tasks:
            tiers[cascade.decide(task).tier] += 1
        best = min(best, time.perf_counter() - start)
    return len(tasks) / best, tiers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()

    ladder = Ladder.of(TIERS)
    if args.data is not None:
        from tierwise.evaluation import load_dataset

        dataset = load_dataset(args.data)
        ladder = Ladder(ladder.tiers, dataset.default_ladder.models)
        rows = [r for r in dataset.rows if r.prompt and all(m in r.results for m in ladder.models)]
    else:
        rows = synthetic_rows(3000, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "router.json"
        began = time.perf_counter()
        LearnedRouter.train(rows[:2000], ladder, threshold=0.5, folds=3).save(path)
        trained = time.perf_counter() - began
        tasks = [Task.create("qa", r.prompt or "") for r in rows[2000 : 2000 + args.tasks]]
        tasks = (tasks * (args.tasks // max(1, len(tasks)) + 1))[: args.tasks]
        env = {"ANTHROPIC_API_KEY": "unused: nothing is called"}
        rules = loads_policy(policy_text(path, "routed", ladder))
        learned_policy = loads_policy(policy_text(path, "learned", ladder))
        learned = load_learned(learned_policy)
        with (
            Cascade(rules, learned=load_learned(rules), env=env) as by_rules,
            Cascade(learned_policy, learned=learned, env=env) as by_router,
        ):
            base, base_tiers = rate(by_rules, tasks, args.rounds)
            live, live_tiers = rate(by_router, tasks, args.rounds)
        checks = verifier_rate(rows, ladder, args.rounds) if args.data is None else None
    chars = sum(len(t.prompt) for t in tasks) / len(tasks)
    print(f"router trained on {min(len(rows), 2000)} rows in {trained:.1f} s; {len(tasks)} tasks")
    print(f"mean prompt {chars:.0f} chars")
    print(f"rules only            {base:>10,.0f} decisions/s   {dict(base_tiers)}")
    print(f"learned router        {live:>10,.0f} decisions/s   {dict(live_tiers)}")
    print(f"per decision: rules {1e6 / base:.1f} µs, learned router {1e6 / live:.1f} µs")
    print(f"ratio learned / rules: {live / base:.4f} (the router's cost per decision)")
    if checks is not None:
        print(
            f"learned validator     {checks:>10,.0f} checks/s      ({1e6 / checks:.0f} µs a check)"
        )


def verifier_rate(rows: list[Row], ladder: Ladder, rounds: int) -> float:
    """Checks per second of the saved verifier on the cheap tier's answers (as a validator)."""
    from tierwise.cascade.validators import StaticContext
    from tierwise.evaluation.verifier import ResponseVerifier

    verifier = ResponseVerifier.train(rows[:600], ladder, {"qa": "text"}, threshold=0.5, folds=3)
    check = verifier.validator("learned")
    cases = [
        (Task.create("qa", r.prompt or ""), r.results[ladder.models[0]].response or "")
        for r in rows[2000:2300]
    ]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for task, answer in cases:
            check.check(answer, StaticContext(task, tier=ladder.tiers[0]))
        best = min(best, time.perf_counter() - start)
    return len(cases) / best


if __name__ == "__main__":
    main()
