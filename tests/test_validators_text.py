"""Parsing shared by validators: JSON fences, self-reported confidence, answer normalisation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.cascade.validators import (
    extract_choice,
    extract_number,
    normalise_answer,
    parse_confidence,
    parse_json,
    strip_json_fence,
)

# -- JSON ---------------------------------------------------------------------------------------


def test_strip_json_fence_unwraps_a_single_fenced_block() -> None:
    assert strip_json_fence('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_json_fence("  ```\n[1, 2]\n```\n") == "[1, 2]"
    assert strip_json_fence('```JSON\n{"a": 1}```') == '{"a": 1}'


def test_strip_json_fence_leaves_text_that_is_not_one_block() -> None:
    two = '```json\n{"a": 1}\n```\nand\n```json\n{"b": 2}\n```'
    assert strip_json_fence(two) == two
    prose = 'Here: ```json\n{"a": 1}\n```'
    assert strip_json_fence(prose) == prose
    python = "```python\nprint(1)\n```"
    assert strip_json_fence(python) == python


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("{'a': 1}", "Expecting property name"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ("[1, 2", "line 1 column 6"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_parse_json_rejects_with_a_reason(text: str, reason_part: str) -> None:
    ok, value, reason = parse_json(text)
    assert not ok
    assert value is None
    assert reason_part in reason


def test_parse_json_accepts_any_json_value() -> None:
    assert parse_json("42") == (True, 42, "")
    assert parse_json('```json\n{"a": [true, null]}\n```') == (True, {"a": [True, None]}, "")


# -- confidence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"answer": "B", "confidence": 0.83}', 0.83),
        ('```json\n{"answer": "B", "confidence": 0.3}\n```', 0.3),
        ('{"answer": "B", "confidence": "high"}', 0.9),
        ('{"answer": "B", "confidence": "75%"}', 0.75),
        ('{"answer": "B", "confidence": 90}', 0.9),
        ("The answer is B.\nconfidence: high", 0.9),
        ("The answer is B.\nConfidence: Medium", 0.6),
        ("The answer is B.\nCONFIDENCE: low", 0.3),
        ("B\nconfidence: 0.8", 0.8),
        ("B\nConfidence = .65", 0.65),
        ("B\n**Confidence:** 0.95", 0.95),
        ("B\nConfidence level: 85%", 0.85),
        ("B\nconfidence score: 40", 0.4),
        ('Sure. {"answer": "B", "confidence": 0.2} done', 0.2),
        ("confidence: low\n...on reflection...\nconfidence: high", 0.9),
        ("confidence: 1", 1.0),
        ("confidence: 0.85.", 0.85),
    ],
)
def test_parse_confidence_reads_every_documented_form(text: str, expected: float) -> None:
    assert parse_confidence(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The answer is B.",
        '{"answer": "B"}',
        '{"answer": {"confidence": 0.9}}',  # only the top level counts for a JSON object
        '{"confidence": true}',
        '{"confidence": -0.5}',
        '{"confidence": "sure"}',
        "confidence: 1000",
        "confidence: very",
        "[0.9]",
    ],
)
def test_parse_confidence_without_a_confidence_gives_none(text: str) -> None:
    assert parse_confidence(text) is None


@given(st.text())
def test_parse_confidence_never_raises_and_stays_in_range(text: str) -> None:
    value = parse_confidence(text)
    assert value is None or 0.0 <= value <= 1.0


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(), st.lists, max_leaves=8))
def test_parse_confidence_never_raises_on_json_like_values(value: object) -> None:
    import json

    text = json.dumps({"confidence": value})
    result = parse_confidence(text)
    assert result is None or 0.0 <= result <= 1.0


# -- choices, numbers, normalisation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("C", "C"),
        ("(C)", "C"),
        (" **C.** ", "C"),
        ("The answer is (C).", "C"),
        ("After weighing A and B, the answer is D because…", "D"),
        ("Answer: B", "B"),
        ("The correct answer is **E**", "E"),
        ("Final answer: J", "J"),
        ("I pick **G** here.", "G"),
        ("Between (A) and (H), I go with (H)", "H"),
        ("C) 42 is the total", "C"),
        ("B. Paris\nbecause…", "B"),
        ("The answer is (A) first thought, but the answer is (F)", "F"),
    ],
)
def test_extract_choice_finds_the_letter(text: str, letter: str) -> None:
    assert extract_choice(text) == letter


@pytest.mark.parametrize(
    "text", ["", "I think a good answer is hard", "K", "The answer is 42", "answer is (k)"]
)
def test_extract_choice_without_a_letter_gives_none(text: str) -> None:
    assert extract_choice(text) is None


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", Decimal(42)),
        ("The total is $1,234.50.", Decimal("1234.50")),
        ("from 3 to 7, so 10", Decimal(10)),
        ("#### -3", Decimal(-3)),
        ("about .5", Decimal("0.5")),
        ("2e3 items", Decimal(2000)),
        ("range 3-5", Decimal(5)),
        ("12 apples and v2", Decimal(12)),
        ("the sum is 1,234, as shown", Decimal(1234)),
    ],
)
def test_extract_number_takes_the_last_number(text: str, number: Decimal) -> None:
    assert extract_number(text) == number


def test_extract_number_without_digits_gives_none() -> None:
    assert extract_number("no numbers, only v2 and 3rd") is None


def test_normalise_answer_modes() -> None:
    assert normalise_answer("  Paris \n", "exact") == ("Paris", "Paris")
    assert normalise_answer("  The  CITY\tof Paris ", "lower") == ("the city of paris",) * 2
    assert normalise_answer("answer is (B)", "choice") == ("B", "B")
    assert normalise_answer("no letter", "choice") is None
    number = normalise_answer("It is 42.0", "number")
    assert number is not None
    assert number[0] == normalise_answer("42", "number")[0]  # type: ignore[index]
    assert normalise_answer("nothing", "number") is None
    assert normalise_answer("{nope", "json") is None


def test_normalise_json_compares_structure_not_text() -> None:
    a = normalise_answer('{"b": [1, 2], "a": 1.0}', "json")
    b = normalise_answer('```json\n{"a": 1, "b": [1, 2]}\n```', "json")
    c = normalise_answer('{"a": true, "b": [1, 2]}', "json")
    d = normalise_answer('{"a": 1, "b": [2, 1]}', "json")
    assert a is not None and b is not None and c is not None and d is not None
    assert a[0] == b[0]
    assert a[0] != c[0]  # true is not 1
    assert a[0] != d[0]  # order inside lists matters


@given(st.text(), st.sampled_from(["exact", "lower", "choice", "number", "json"]))
def test_normalise_answer_never_raises(text: str, mode: str) -> None:
    normalise_answer(text, mode)  # type: ignore[arg-type]
