"""Policy loading: shapes, cross-references and the errors a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierwise.errors import PolicyError, PolicyIssue
from tierwise.policy import (
    UnknownTierError,
    default_policy,
    default_policy_text,
    load_policy,
    loads_policy,
)
from tierwise.policy.locate import format_path, key_lines

HEAD = """\
version = 1

[[tiers]]
name = "cheap"
provider = "anthropic"
model = "claude-haiku-4-5"

[[tiers]]
name = "mid"
provider = "anthropic"
model = "claude-sonnet-4-6"
"""


def errors_of(text: str) -> tuple[PolicyIssue, ...]:
    with pytest.raises(PolicyError) as info:
        loads_policy(text, source="team.toml")
    assert info.value.file == "team.toml"
    return info.value.issues


def only(issues: tuple[PolicyIssue, ...]) -> PolicyIssue:
    assert len(issues) == 1, issues
    return issues[0]


def line_containing(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# -- the default policy ---------------------------------------------------------------------------


def test_default_policy_has_the_three_claude_tiers_and_every_article_kind() -> None:
    policy = default_policy()
    assert policy.ladder == ("cheap", "mid", "strong")
    models = [policy.tier(t).model for t in policy.ladder]
    assert models == ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"]
    assert all(policy.tier(t).api_key_env == "ANTHROPIC_API_KEY" for t in policy.ladder)
    article_kinds = {
        "classify", "route", "filter_spam", "extract", "summarize", "draft_reply", "code_edit",
        "design_page", "build_project", "refactor", "debug", "architecture", "review", "plan",
    }  # fmt: skip
    assert article_kinds <= set(policy.kinds)
    assert policy.model.store_content is False
    assert policy.model.fleet.escalation_red_line == pytest.approx(0.09)
    assert policy.source is None


def test_default_policy_text_is_commented_and_loads_to_the_default_policy() -> None:
    text = default_policy_text()
    assert text.count("\n#") > 20
    assert loads_policy(text).revision == default_policy().revision


def test_default_kinds_attach_validators_by_name() -> None:
    policy = default_policy()
    extract = policy.kind("extract")
    assert "json" in extract.validator_names
    assert [s.type for s in extract.validators] == ["not_truncated", "json"]
    classify = policy.kind("classify")
    confidence = classify.validators[classify.validator_names.index("confidence")]
    assert confidence.type == "confidence"
    assert confidence.min == pytest.approx(0.7)


# -- revision --------------------------------------------------------------------------------------


def test_revision_ignores_comments_layout_and_table_order_but_not_content() -> None:
    base = HEAD + '\n[kinds.a]\ndoubt = "cheap"\n\n[kinds.b]\nfloor = "mid"\n'
    reordered = (
        "# a comment\n" + HEAD.replace('name = "cheap"', 'name   =   "cheap"  # bottom')
    ) + '\n[kinds.b]\nfloor = "mid"\n[kinds.a]\ndoubt = "cheap"\n'
    changed = base.replace('floor = "mid"', 'floor = "cheap"')
    first = loads_policy(base)
    assert first.revision == loads_policy(base).revision
    assert first.revision == loads_policy(reordered).revision
    assert first.revision != loads_policy(changed).revision
    assert len(first.revision) == 64 and int(first.revision, 16) >= 0


def test_revision_is_not_the_file_version() -> None:
    one = loads_policy(HEAD)
    two = loads_policy(HEAD.replace("version = 1\n", "version = 1\nstore_content = false\n"))
    assert one.revision != "1"
    assert one.revision == two.revision


# -- kinds and defaults ----------------------------------------------------------------------------


def test_unknown_kind_gets_defaults_and_is_marked_unknown() -> None:
    policy = loads_policy(
        HEAD
        + """
[validators.j]
type = "json"
[defaults]
floor = "mid"
doubt = "cheap"
validators = ["j", { type = "not_refusal" }]
max_tokens = 333
[kinds.listed]
doubt = "up"
"""
    )
    unknown = policy.kind("never-heard-of-it")
    assert unknown.name == "never-heard-of-it"
    assert unknown.known is False
    assert (unknown.floor, unknown.floor_source, unknown.doubt) == ("mid", "policy", "cheap")
    assert unknown.validator_names == ("j", None)
    assert [v.type for v in unknown.validators] == ["json", "not_refusal"]
    assert unknown.max_tokens == 333
    listed = policy.kind("listed")
    assert listed.known is True
    assert listed.doubt == "up"  # its own setting wins
    assert listed.floor == "mid"  # unset: falls back to [defaults]
    assert listed.validator_names == ("j", None)
    assert policy.kinds == ("listed",)


def test_kind_validators_replace_the_defaults_list() -> None:
    policy = loads_policy(
        HEAD
        + """
[validators.j]
type = "json"
[defaults]
validators = [{ type = "not_refusal" }]
[kinds.x]
validators = ["j"]
[kinds.y]
validators = []
"""
    )
    assert policy.kind("x").validator_names == ("j",)
    assert policy.kind("y").validators == ()


def test_with_floors_records_learned_floors_and_changes_the_revision() -> None:
    policy = loads_policy(HEAD + '\n[kinds.extract_invoice]\ndoubt = "cheap"\n')
    learned = policy.with_floors({"extract_invoice": "mid", "tone_check": "mid"})
    invoice = learned.kind("extract_invoice")
    assert (invoice.floor, invoice.floor_source, invoice.known) == ("mid", "learned", True)
    assert invoice.doubt == "cheap"
    tone = learned.kind("tone_check")
    assert (tone.floor, tone.floor_source, tone.known) == ("mid", "learned", False)
    assert learned.kinds == ("extract_invoice",)
    assert learned.revision != policy.revision
    assert policy.kind("extract_invoice").floor is None  # the original is untouched
    assert policy.with_floors({}) is policy


def test_with_floors_rejects_a_tier_not_on_the_ladder() -> None:
    with pytest.raises(PolicyError, match="unknown tier 'gold'"):
        default_policy().with_floors({"extract": "gold"})


def test_policy_is_immutable_and_tier_lookups_fail_clearly() -> None:
    policy = default_policy()
    with pytest.raises(AttributeError):
        policy.revision = "x"  # type: ignore[misc]
    with pytest.raises(UnknownTierError, match="unknown tier 'gold'; the ladder is cheap, mid"):
        policy.tier("gold")
    with pytest.raises(KeyError):
        policy.tier_index("gold")
    assert policy.tier_index("strong") == 2


def test_doubt_tier_directions() -> None:
    policy = default_policy()
    assert policy.doubt_tier("cheap", "mid") == "cheap"
    assert policy.doubt_tier("up") == "mid"
    assert policy.doubt_tier("up", "mid") == "strong"
    assert policy.doubt_tier("up", "strong") == "strong"  # nothing above the top
    assert policy.doubt_tier("strong") == "strong"


# -- errors ----------------------------------------------------------------------------------------


def test_unknown_key_gets_the_key_path_a_suggestion_and_the_line() -> None:
    text = (
        HEAD
        + """
[[rules]]
when = { kind = "a" }
tier = "cheap"

[[rules]]
when = { kind = "b" }
tier = "cheap"

[[rules]]
name = "typo"
when = { knd = "classify" }
tier = "mid"
"""
    )
    issue = only(errors_of(text))
    assert issue.path == "rules[2].when.knd"
    assert issue.message == "unknown field; did you mean 'kind'?"
    assert issue.line == line_containing(text, "knd")
    assert issue.format("team.toml").startswith(f"team.toml:{issue.line}: error: rules[2].when.knd")


def test_unknown_key_without_a_close_match_lists_the_fields() -> None:
    issue = only(errors_of("colour = 3\n" + HEAD))
    assert issue.path == "colour"
    assert "unknown field; expected one of version, store_content, tiers" in issue.message


def test_unknown_key_in_a_table_header_section() -> None:
    text = HEAD + "\n[fleet]\nred_line = 0.1\n"
    issue = only(errors_of(text))
    assert issue.path == "fleet.red_line"
    assert issue.line == line_containing(text, "red_line")
    assert issue.message.startswith("unknown field; expected one of escalation_red_line")


def test_rule_naming_an_undefined_tier() -> None:
    text = HEAD + '\n[[rules]]\nwhen = { kind = "a" }\ntier = "strnog"\n'
    issue = only(errors_of(text))
    assert issue.path == "rules[0].tier"
    assert "unknown tier 'strnog'" in issue.message
    assert issue.line == line_containing(text, "strnog")


def test_every_tier_reference_is_checked() -> None:
    text = (
        HEAD
        + """
[frontier]
tier = "top"
[[frontier.rules]]
when = { scope = "cross-service" }
tier = "gold"
[defaults]
floor = "base"
doubt = "sideways"
[kinds.k]
floor = "chep"
doubt = "mdi"
[validators.agree]
type = "agreement"
tiers = ["cheap", "silver"]
"""
    )
    issues = {i.path: i.message for i in errors_of(text)}
    assert set(issues) == {
        "frontier.tier",
        "frontier.rules[0].tier",
        "defaults.floor",
        "defaults.doubt",
        "kinds.k.floor",
        "kinds.k.doubt",
        "validators.agree.tiers[1]",
    }
    assert issues["kinds.k.floor"].endswith("did you mean 'cheap'?")
    assert "expected 'cheap', 'up', 'judge' or a tier name (cheap, mid)" in issues["defaults.doubt"]
    assert issues["kinds.k.doubt"].endswith("did you mean 'mid'?")


def test_kind_naming_an_undefined_validator() -> None:
    text = HEAD + '\n[validators.json]\ntype = "json"\n[kinds.extract]\nvalidators = ["jsno"]\n'
    issue = only(errors_of(text))
    assert issue.path == "kinds.extract.validators[0]"
    assert "unknown validator 'jsno'" in issue.message
    assert issue.message.endswith("did you mean 'json'?")
    assert issue.line == line_containing(text, "jsno")


def test_duplicate_tier_names() -> None:
    text = HEAD + '\n[[tiers]]\nname = "mid"\nprovider = "openai"\nmodel = "gpt-4o-mini"\n'
    issue = only(errors_of(text))
    assert issue.path == "tiers[2].name"
    assert "duplicate tier name 'mid'" in issue.message


def test_bad_toml_gives_line_and_column() -> None:
    text = HEAD + "\n[[rules]\nwhen = {}\n"
    issue = only(errors_of(text))
    assert issue.line == line_containing(text, "[[rules]")
    assert issue.message.startswith("invalid TOML:")
    assert "column" in issue.message


def test_bad_vocabulary_value_with_suggestion() -> None:
    text = HEAD + '\n[[rules]]\nwhen = { scope = "singlefile" }\ntier = "cheap"\n'
    issue = only(errors_of(text))
    assert issue.path == "rules[0].when.scope"
    assert "unknown scope 'singlefile'" in issue.message
    assert issue.message.endswith("did you mean 'single-file'?")


def test_bad_vocabulary_in_the_frontier_list() -> None:
    issue = only(errors_of(HEAD + '\n[frontier]\ndomains = ["security", "paymnets"]\n'))
    assert issue.path == "frontier.domains"
    assert "unknown domain 'paymnets'" in issue.message


def test_range_with_min_above_max() -> None:
    text = HEAD + '\n[[rules]]\nwhen = { files = { min = 5, max = 2 } }\ntier = "cheap"\n'
    issue = only(errors_of(text))  # the int branch of `int | Range` adds no noise
    assert issue.path == "rules[0].when.files"
    assert "'min' (5.0) is greater than 'max' (2.0)" in issue.message
    assert issue.line == line_containing(text, "max = 2")


def test_wrong_type_in_a_union_is_one_clear_issue() -> None:
    issue = only(errors_of(HEAD + '\n[[rules]]\nwhen = { kind = 5 }\ntier = "cheap"\n'))
    assert issue.path == "rules[0].when.kind"
    assert issue.message == "expected a string or a list, found 5"


def test_literal_and_discriminator_errors_suggest_the_intended_value() -> None:
    text = HEAD.replace('provider = "anthropic"\nmodel = "claude-sonnet', 'provider = "antropic"\n'
                        'model = "claude-sonnet') + '\n[validators.v]\ntype = "jsn"\n'  # fmt: skip
    issues = {i.path: i for i in errors_of(text)}
    assert issues["tiers[1].provider"].message.endswith("did you mean 'anthropic'?")
    assert issues["validators.v.type"].message.startswith("unknown type 'jsn'; expected one of")
    assert issues["validators.v.type"].message.endswith("did you mean 'json'?")
    assert issues["validators.v.type"].line == line_containing(text, "jsn")


def test_missing_required_fields() -> None:
    issues = {i.path: i.message for i in errors_of('version = 1\n[[tiers]]\nname = "x"\n')}
    assert issues == {
        "tiers[0].provider": "required field is missing",
        "tiers[0].model": "required field is missing",
    }
    paths = {i.path for i in errors_of("[[tiers]]\n")}
    assert paths == {"version", "tiers[0].name", "tiers[0].provider", "tiers[0].model"}


def test_wrong_version() -> None:
    issue = only(errors_of(HEAD.replace("version = 1", "version = 2")))
    assert (issue.path, issue.message, issue.line) == ("version", "expected 1, found 2", 1)


def test_union_branch_labels_never_leak_into_paths() -> None:
    text = (
        HEAD
        + """
alternates = [{ model = "claude-sonnet-4-5", modl = "x" }]
[kinds.k]
validators = [{ type = "confidence", min = 2 }, 5]
"""
    )
    issues = {i.path: i.message for i in errors_of(text)}
    assert issues == {
        "tiers[1].alternates[0].modl": "unknown field; did you mean 'model'?",
        "kinds.k.validators[0].min": "expected less than or equal to 1, found 2",
        "kinds.k.validators[1]": "expected a string or a table, found 5",
    }


def test_a_model_without_any_price_is_an_error_until_the_policy_prices_it() -> None:
    text = HEAD + '\n[[tiers]]\nname = "local"\nprovider = "openai"\nmodel = "my-local-llm-7b"\n'
    issue = only(errors_of(text))
    assert issue.path == "tiers[2].model"
    assert "no price known for model 'my-local-llm-7b'" in issue.message
    priced = loads_policy(text + '\n[prices."my-local-llm-7b"]\ninput = 0.2\noutput = 0.6\n')
    assert priced.ladder[-1] == "local"


def test_alternates_need_prices_too() -> None:
    text = HEAD + 'alternates = ["unknown-model-zz"]\n'
    assert only(errors_of(text)).path == "tiers[1].alternates[0]"


def test_all_issues_are_reported_at_once_in_file_order() -> None:
    text = HEAD + '\n[[rules]]\nwhen = { knd = "a" }\ntier = "cheap"\n\n[fleet]\nmin_sampl = 3\n'
    issues = errors_of(text)
    assert [i.path for i in issues] == ["rules[0].when.knd", "fleet.min_sampl"]
    assert [i.line for i in issues] == sorted(i.line or 0 for i in issues)


def test_load_policy_reads_files_and_resolves_base_dir(tmp_path: Path) -> None:
    file = tmp_path / "sub" / "team.toml"
    file.parent.mkdir()
    file.write_text(HEAD)
    policy = load_policy(file)
    assert policy.source == file
    assert policy.base_dir == file.resolve().parent
    assert policy.text == HEAD


def test_load_policy_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "nope.toml")
    assert "cannot read the policy file" in str(info.value)
    assert str(tmp_path / "nope.toml") in str(info.value)


# -- locating keys ---------------------------------------------------------------------------------


def test_key_lines_follow_headers_arrays_inline_tables_and_multiline_values() -> None:
    text = """\
version = 1 # comment with = sign
[[tiers]]
name = "a"
[[tiers]]
name = "b"
notes = '''
x = 1
'''
[prices."gpt-4.1"]
input = 1
[[rules]]
name = "r"
[rules.when]
kind = [
  "x",
  "y",
]
[kinds.k]
validators = [
  "json",
  { type = "confidence", min = 0.5 },
]
"""
    lines = {format_path(k): v for k, v in key_lines(text).items()}
    assert lines["version"] == 1
    assert lines["tiers[1].name"] == 5
    assert "x" not in lines  # inside a multi-line string
    assert lines['prices."gpt-4.1".input'] == 10
    assert lines["rules[0].when"] == 13
    assert lines["rules[0].when.kind[1]"] == 16
    assert lines["kinds.k.validators[1].min"] == 21


def test_format_path_quotes_only_what_needs_quotes() -> None:
    assert format_path(("rules", 2, "when", "kind")) == "rules[2].when.kind"
    assert format_path(("prices", "claude-haiku-4-5")) == "prices.claude-haiku-4-5"
    assert format_path(("prices", "gpt-4.1", "input")) == 'prices."gpt-4.1".input'
