"""The learned router and response verifier, live: what ``tierwise eval --save-router`` saved,
used by the cascade that serves traffic.

A policy opts in per kind — ``[kinds.X] start = "learned"`` makes the saved router the kind's
scorer (it proposes the start tier; floors and frontier pins still hold) — and per validator —
``{ type = "learned" }`` applies the saved verifier to each tier's answer (below the top tier:
pass at ``P(correct)`` ≥ the tier's threshold, else climb). Both come from one file, ``[learned]
path`` (relative to the policy file), read once by :func:`load_learned` when the gateway starts
or reloads, or when a library user builds the cascade::

    policy = load_policy("tierwise.toml")
    cascade = Cascade(policy, ledger=ledger, learned=load_learned(policy))

The file must have been trained for the policy's ladder — the same tier names, each served by
the same primary model — or it is refused with the two ladders side by side: a router trained on
other models says nothing about these. The models are the very classes ``tierwise eval`` runs
(:class:`~tierwise.evaluation.learned.LearnedRouter`,
:class:`~tierwise.evaluation.verifier.ResponseVerifier`), so a verifier decides live exactly as
it decided in the evaluation. numpy and scikit-learn are needed (the ``eval`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tierwise.errors import PolicyError, PolicyIssue

if TYPE_CHECKING:
    from tierwise.cascade.validators import Validator
    from tierwise.evaluation.learned import LearnedRouter
    from tierwise.evaluation.verifier import ResponseVerifier
    from tierwise.policy import Policy
    from tierwise.task import Task

__all__ = ["LearnedModels", "load_learned"]

_WHERE = "learned.path"


class LearnedModels:
    """A saved router (and verifier) checked against a policy's ladder: the cascade's
    :class:`~tierwise.cascade.seams.LearnedModels` for ``start = "learned"`` kinds and
    ``learned`` validators."""

    def __init__(
        self, router: LearnedRouter, verifier: ResponseVerifier | None, source: Path
    ) -> None:
        self.router = router
        self.verifier = verifier
        self.source = source

    def __repr__(self) -> str:
        return f"LearnedModels({self.source}, router={self.router!r}, verifier={self.verifier!r})"

    def propose(self, task: Task) -> str | None:
        """The tier the saved router starts *task* at."""
        return self.router.propose(task)

    def validator(self, name: str) -> Validator:
        """The saved response verifier as a validator named *name*.

        Raises:
            PolicyError: the file holds no verifier.
        """
        if self.verifier is None:
            raise PolicyError(
                [
                    PolicyIssue(
                        _WHERE,
                        f"{self.source} holds a router but no response verifier (one is trained "
                        "only when the training rows carry the answers of the tiers below the "
                        "top); a 'learned' validator needs one",
                    )
                ]
            )
        return self.verifier.validator(name)


def _ladder_text(tiers: tuple[str, ...], models: tuple[str, ...]) -> str:
    return ",".join(f"{t}={m}" for t, m in zip(tiers, models, strict=True))


def load_learned(policy: Policy) -> LearnedModels | None:
    """The saved models *policy* uses, read from ``[learned] path``; ``None`` when it uses none.

    Raises:
        PolicyError: the file is missing, unreadable or not a saved router; it was trained for
            another ladder (names both); the policy has a ``learned`` validator and the file no
            verifier; or scikit-learn is not installed (names the extra).
    """
    if not policy.uses_learned:
        return None
    given = policy.model.learned.path
    if given is None:  # the loader refuses this already; a hand-built policy may not have
        raise PolicyError([PolicyIssue(_WHERE, "learned routing needs [learned] path")])
    path = Path(given)
    if not path.is_absolute():
        path = policy.base_dir / path
    try:
        from tierwise.evaluation.dataset import DatasetError
        from tierwise.evaluation.learned import LearnedRouter
        from tierwise.evaluation.verifier import ResponseVerifier
    except ImportError as exc:
        raise PolicyError(
            [
                PolicyIssue(
                    _WHERE,
                    f"the learned router needs numpy and scikit-learn ({exc.name} is missing): "
                    "pip install 'tierwise[eval]'",
                )
            ]
        ) from None
    try:
        router = LearnedRouter.load(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        found = data.get("verifier") if isinstance(data, dict) else None
        verifier = None if found is None else ResponseVerifier.from_json(found)
    except DatasetError as exc:
        raise PolicyError([PolicyIssue(_WHERE, str(exc))]) from None
    tiers = policy.ladder
    models = tuple(policy.tier(t).model for t in tiers)
    for what, saved in (("router", router), ("response verifier", verifier)):
        if saved is None:
            continue
        if tuple(saved.tiers) != tiers or tuple(saved.models) != models:
            raise PolicyError(
                [
                    PolicyIssue(
                        _WHERE,
                        f"the {what} in {path} was trained for the ladder "
                        f"{_ladder_text(tuple(saved.tiers), tuple(saved.models))}; this policy's "
                        f"ladder is {_ladder_text(tiers, models)}. Train one for this ladder: "
                        "tierwise ledger export --out logs/fleet.jsonl && tierwise eval logs/ "
                        "--save-router FILE",
                    )
                ]
            )
    learned = LearnedModels(router, verifier, path)
    if "verifier" in policy.learned_uses:
        learned.validator("learned")  # refuse a file without a verifier now, not per task
    return learned
