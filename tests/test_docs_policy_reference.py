"""Every TOML example in docs/policy-reference.md loads with the real loader, as the page says.

The page's convention: a block starting with ``version = 1`` is a whole policy; a block whose
first line is ``# fragment`` is appended to the page's base policy (its first block);
``# fragment, invalid: TEXT`` must be refused with an error containing TEXT, and
``# fragment, warns: TEXT`` must load and draw a ``policy check`` warning containing TEXT.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tierwise.errors import PolicyError
from tierwise.policy import check_policy, loads_policy
from tierwise.policy.schema import PolicyModel

DOC = Path(__file__).resolve().parents[1] / "docs" / "policy-reference.md"
README = DOC.parents[1] / "README.md"
_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"^# fragment(?:, (invalid|warns): (.*))?$")


def blocks() -> list[str]:
    return _BLOCK.findall(DOC.read_text(encoding="utf-8"))


def base() -> str:
    first = blocks()[0]
    assert first.startswith("version = 1")
    return first


def cases() -> list[tuple[int, str]]:
    return list(enumerate(blocks()))


@pytest.mark.parametrize(("index", "block"), cases(), ids=lambda v: str(v)[:20])
def test_toml_example_loads_as_documented(index: int, block: str, tmp_path: Path) -> None:
    first_line = block.splitlines()[0]
    if block.startswith("version = 1"):
        policy = loads_policy(block, base_dir=tmp_path)
        assert policy.ladder
        return
    mark = _MARK.match(first_line)
    assert mark, f"block {index} is neither a whole policy nor marked '# fragment': {first_line!r}"
    text = base() + "\n" + block
    expectation, expected = mark.groups()
    if expectation == "invalid":
        with pytest.raises(PolicyError) as info:
            loads_policy(text, base_dir=tmp_path)
        assert expected in str(info.value)
        return
    policy = loads_policy(text, base_dir=tmp_path)
    if expectation == "warns":
        assert any(expected in w.message for w in check_policy(policy)), check_policy(policy)


def test_there_are_examples_of_every_validator_type_and_section() -> None:
    text = "\n".join(blocks())
    for kind in (
        "json",
        "json_schema",
        "regex",
        "python",
        "confidence",
        "not_refusal",
        "not_truncated",
        "command",
        "agreement",
    ):
        assert f'type = "{kind}"' in text, kind
    for section in ("[[tiers]]", "[prices.", "[frontier]", "[[rules]]", "[defaults]", "[kinds."):
        assert section in text, section
    for section in ("[budgets]", "[retry]", "[fleet]", "[[frontier.rules]]", "store_content"):
        assert section in text, section


def test_every_policy_key_is_documented() -> None:
    """Each field of the schema appears in the reference as `key` (a new key needs a line)."""
    doc = DOC.read_text(encoding="utf-8")
    seen: set[type] = set()
    missing: list[str] = []

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            key = field.alias or name
            if not any(form in doc for form in (f"`{key}`", f"`[{key}", f"`[[{key}")):
                missing.append(f"{model.__name__}.{key}")
            for arg in _models_in(field.annotation):
                walk(arg)

    walk(PolicyModel)
    assert missing == []


def _models_in(annotation: object) -> list[type]:
    import typing

    from pydantic import BaseModel

    found: list[type] = []
    stack = [annotation]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found.append(tp)
        stack.extend(typing.get_args(tp))
    return found


def test_the_readme_links_the_reference() -> None:
    assert "docs/policy-reference.md" in README.read_text(encoding="utf-8")
