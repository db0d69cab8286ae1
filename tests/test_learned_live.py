"""The saved learned router and verifier, loaded for live use: the ladder check, clear refusals,
the cascade's scorer hook, and the gateway loading them at start and on reload."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from tierwise.cascade import Cascade
from tierwise.errors import PolicyError
from tierwise.evaluation.dataset import Ladder, ModelResult, Row
from tierwise.evaluation.learned import LearnedRouter
from tierwise.evaluation.live import load_learned
from tierwise.gateway import GatewayConfig
from tierwise.gateway.server import GatewayServer
from tierwise.policy import load_policy, loads_policy
from tierwise.task import Task
from tierwise.testing import FakeUpstream
from tierwise.testing.policies import TEST_KEY_ENV, upstream_policy_text

CHEAP, MID, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"
LADDER = Ladder(("cheap", "mid", "strong"), (CHEAP, MID, STRONG))


def _rows() -> list[Row]:
    """Short questions pass on the cheap model; long proofs need the strong one."""
    rows = []
    for i in range(60):
        hard = i % 2 == 0
        prompt = f"prove theorem {i} rigorously with lemmas" if hard else f"what is {i} plus one"
        results = {
            CHEAP: ModelResult(0.0 if hard else 1.0),
            MID: ModelResult(0.0 if hard else 1.0),
            STRONG: ModelResult(1.0),
        }
        rows.append(Row(f"r{i}", prompt, "qa", results))
    return rows


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("router") / "router.json"
    LearnedRouter.train(_rows(), LADDER, threshold=0.5, folds=3).save(path)
    return path


def _policy_text(up: FakeUpstream | str, router: Path, extra: str = "") -> str:
    return upstream_policy_text(
        up,
        extra=f'\n[learned]\npath = "{router}"\n[kinds.qa]\nstart = "learned"\nvalidators = []\n'
        + extra,
    )


def test_the_saved_router_is_the_kinds_scorer(router_file: Path) -> None:
    policy = loads_policy(_policy_text("http://127.0.0.1:9", router_file))
    learned = load_learned(policy)
    assert learned is not None
    with Cascade(policy, learned=learned, env={TEST_KEY_ENV: "k"}) as cascade:
        hard = cascade.decide(Task.create("qa", "prove theorem 99 rigorously with lemmas"))
        easy = cascade.decide(Task.create("qa", "what is 99 plus one"))
        other = cascade.decide(Task.create("chat", "prove theorem 99 rigorously with lemmas"))
    assert (hard.tier, easy.tier) == ("strong", "cheap")
    assert other.tier != "strong" or other.step != "explicit"  # other kinds route by the rules


def test_a_file_trained_for_another_ladder_is_refused_naming_both(
    router_file: Path, tmp_path: Path
) -> None:
    text = _policy_text("http://127.0.0.1:9", router_file).replace(MID, "gpt-4o-mini")
    text = text.replace(
        'provider = "anthropic"\nmodel = "gpt-4o-mini"',
        'provider = "openai"\nmodel = "gpt-4o-mini"',
    )
    with pytest.raises(PolicyError) as info:
        load_learned(loads_policy(text))
    message = str(info.value)
    assert "learned.path" in message
    assert f"trained for the ladder cheap={CHEAP},mid={MID},strong={STRONG}" in message
    assert "this policy's ladder is cheap=claude-haiku-4-5,mid=gpt-4o-mini" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("not json", "cannot read JSON"),
        ('{"format": "something else"}', "not a tierwise learned router"),
    ],
)
def test_a_missing_or_foreign_file_is_refused(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "router.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(PolicyError, match=expected):
        load_learned(loads_policy(_policy_text("http://127.0.0.1:9", path)))


def test_a_learned_validator_needs_a_verifier_in_the_file(router_file: Path) -> None:
    text = _policy_text("http://127.0.0.1:9", router_file).replace(
        "validators = []", 'validators = [{ type = "learned" }]'
    )
    with pytest.raises(PolicyError, match="no response verifier"):
        load_learned(loads_policy(text))


def test_a_cascade_without_the_saved_models_says_how_to_pass_them(router_file: Path) -> None:
    policy = loads_policy(_policy_text("http://127.0.0.1:9", router_file))
    with pytest.raises(PolicyError, match=r"learned=tierwise\.evaluation\.load_learned\(policy\)"):
        Cascade(policy, env={TEST_KEY_ENV: "k"})


def test_a_policy_without_learned_routing_loads_nothing() -> None:
    assert load_learned(loads_policy(upstream_policy_text("http://127.0.0.1:9"))) is None


def test_the_gateway_loads_them_at_start_and_refuses_a_bad_file_on_reload(
    fake_upstream: FakeUpstream, router_file: Path, tmp_path: Path
) -> None:
    policy_file = tmp_path / "tierwise.toml"
    policy_file.write_text(_policy_text(fake_upstream, router_file), encoding="utf-8")
    config = GatewayConfig(
        policy_path=str(policy_file), ledger_url=str(tmp_path / "l.db"), env={TEST_KEY_ENV: "k"}
    )
    with GatewayServer(config) as gateway, httpx2.Client(base_url=gateway.base_url) as client:
        body = {
            "model": "tierwise/qa",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "prove theorem 7 rigorously with lemmas"}],
        }
        first = client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        assert first.status_code == 200 and first.headers["x-tierwise-tier"] == "strong"
        # the saved file is replaced by one for another ladder: the reload refuses it
        wrong = json.loads(router_file.read_text(encoding="utf-8"))
        wrong["models"] = [CHEAP, "other-model", STRONG]
        broken = tmp_path / "wrong.json"
        broken.write_text(json.dumps(wrong), encoding="utf-8")
        policy_file.write_text(_policy_text(fake_upstream, broken), encoding="utf-8")
        refused = client.post("/v1/tierwise/admin/reload")
        assert refused.status_code == 400
        assert "trained for the ladder" in refused.json()["error"]
        again = client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        assert again.status_code == 200 and again.headers["x-tierwise-tier"] == "strong"
    # and a gateway asked to start with it does not start, saying why
    import asyncio

    from tierwise.gateway.app import create_app

    app = create_app(config)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(PolicyError, match="trained for the ladder"):
        asyncio.run(start())
    assert load_policy(policy_file).model.learned.path == str(broken)


def test_one_texts_fast_transform_equals_scikit_learns(router_file: Path) -> None:
    """The live path (:meth:`TextFeatures.transform_one`, no scikit-learn set-up per call) gives
    the batch transform's row and the same proposal, on prompts the router never saw too."""
    import numpy as np

    from tierwise.evaluation.learned import router_text

    router = LearnedRouter.load(router_file)
    texts = [r.prompt or "" for r in _rows()] + [
        "",
        "a",
        "Prove it: the lemma, RIGOROUSLY; then what is 7 plus one?",
        "ünïcödé wörds and numbers 12 345 in one line " * 30,
        "prove prove prove theorem theorem",
    ]
    matrix = router.features.transform([router_text("qa", t) for t in texts]).toarray()
    for text, row in zip(texts, matrix, strict=True):
        cols, values = router.features.transform_one(router_text("qa", text))
        dense = np.zeros(row.shape)
        dense[cols] = values
        assert np.allclose(dense, row, rtol=0, atol=1e-12), text
        probs = router.pass_probabilities([router_text("qa", text)])
        assert (
            router.propose(Task.create("qa", text))
            == router.tiers[int(router.tier_index(probs)[0])]
        )


def test_one_answers_verifier_probability_equals_the_batch_matrix() -> None:
    """The validator's per-answer path equals the verifier's matrix (the reference), for text
    and number kinds, with and without the cheaper tiers' answers."""
    import math

    import numpy as np

    from tierwise.evaluation.verifier import ResponseVerifier
    from tierwise.evaluation.verifier_features import answer_of, dense_features, response_text

    rows = []
    for i in range(80):
        kind = "sum" if i % 2 else "qa"
        right = i % 3 != 0
        answer = f"so the result is {i + 1}" if right else f"I think it is {i + 7}"
        results = {
            CHEAP: ModelResult(float(right), response=answer),
            MID: ModelResult(1.0, response=f"the result is {i + 1}"),
            STRONG: ModelResult(1.0, response=f"the result is {i + 1}"),
        }
        rows.append(Row(f"r{i}", f"what is {i} plus one, {kind}?", kind, results))
    formats = {"qa": "text", "sum": "number"}
    verifier = ResponseVerifier.train(rows, LADDER, formats, threshold=0.5, folds=3)
    for row in rows[:30]:
        for index, model in enumerate(LADDER.models[:-1]):
            response = row.results[model].response or ""
            cheaper = [row.results[m].response or "" for m in LADDER.models[:index]]
            fast = verifier.probability(index, row.kind, row.prompt or "", response, cheaper)
            fmt = formats[row.kind]
            answer = answer_of(response, fmt)
            others = [answer_of(c, fmt) for c in cheaper]
            dense = [dense_features(answer, response, others, row.prompt or "")]
            x = verifier._matrix(  # the reference: scikit-learn's transform, stacked
                [row.kind], [row.prompt or ""], [response_text(row.kind, answer, response)], dense
            )
            z = float((x @ verifier.coef[index])[0]) + float(verifier.intercept[index])
            slow = 1.0 / (1.0 + math.exp(-z))
            if verifier.calibrators is not None:
                slow = float(verifier.calibrators[index](np.array([slow]))[0])
            assert fast == pytest.approx(slow, abs=1e-12)


def test_policy_check_reads_the_saved_file(router_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tierwise.cli import build_app

    good = tmp_path / "good.toml"
    good.write_text(_policy_text("http://127.0.0.1:9", router_file), encoding="utf-8")
    missing = tmp_path / "missing.toml"
    missing.write_text(_policy_text("http://127.0.0.1:9", tmp_path / "nope.json"), encoding="utf-8")
    assert CliRunner().invoke(build_app(), ["policy", "check", str(good)]).exit_code == 0
    refused = CliRunner().invoke(build_app(), ["policy", "check", str(missing)])
    assert refused.exit_code == 2
    assert "learned.path" in refused.output and "does not exist" in refused.output
