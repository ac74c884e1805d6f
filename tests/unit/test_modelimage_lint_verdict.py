"""The lint verdict: hadolint findings against a ModelImage's threshold and ignored rules."""

from __future__ import annotations

import dataclasses
import json

from edgeferry.adapters import hadolint
from edgeferry.decisions import lint_verdict


@dataclasses.dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    level: str
    message: str


ERROR = Finding("DL3006", 1, "error", "Always tag the version of an image explicitly")
WARNING = Finding("DL3008", 3, "warning", "Pin versions in apt get install")
INFO = Finding("DL3059", 5, "info", "Multiple consecutive RUN instructions")
STYLE = Finding("DL3048", 7, "style", "Invalid label key")


def test_an_error_fails_the_default_threshold() -> None:
    verdict = lint_verdict.decide([ERROR, WARNING])
    assert not verdict.passed
    assert verdict.failing == 1
    assert verdict.condition.status == "False" and verdict.condition.reason == "LintFailed"
    assert "DL3006 line 1" in verdict.condition.message


def test_warnings_pass_the_default_threshold_but_are_counted() -> None:
    verdict = lint_verdict.decide([WARNING, INFO, STYLE])
    assert verdict.passed
    assert (verdict.status.warnings, verdict.status.infos, verdict.status.styles) == (1, 1, 1)
    assert verdict.condition.status == "True" and verdict.condition.reason == "LintPassed"


def test_warning_threshold_fails_on_warnings_and_above() -> None:
    assert not lint_verdict.decide([WARNING], threshold="warning").passed
    assert lint_verdict.decide([INFO, STYLE], threshold="warning").passed


def test_style_threshold_fails_on_any_finding() -> None:
    assert not lint_verdict.decide([STYLE], threshold="style").passed


def test_none_threshold_never_fails() -> None:
    verdict = lint_verdict.decide([ERROR, WARNING], threshold="none")
    assert verdict.passed and verdict.status.errors == 1


def test_ignored_rules_neither_fail_nor_count() -> None:
    verdict = lint_verdict.decide([ERROR, WARNING], ignore=["dl3006"])
    assert verdict.passed
    assert verdict.status.errors == 0
    assert [f.rule for f in verdict.status.findings] == ["DL3008"]


def test_status_keeps_the_worst_findings_first_and_at_most_ten() -> None:
    many = [Finding("DL3059", n, "info", "m") for n in range(1, 30)] + [ERROR]
    verdict = lint_verdict.decide(many)
    assert len(verdict.status.findings) == lint_verdict.MAX_FINDINGS
    assert verdict.status.findings[0].rule == "DL3006"
    assert verdict.status.infos == 29


def test_long_messages_are_cut_to_one_line() -> None:
    verdict = lint_verdict.decide([Finding("SC2086", 2, "info", "word\n" * 200)])
    message = verdict.status.findings[0].message
    assert len(message) <= lint_verdict.MAX_MESSAGE and "\n" not in message


def test_levels_hadolint_may_add_later_count_as_info() -> None:
    verdict = lint_verdict.decide([Finding("DL9999", 1, "notice", "new")])
    assert verdict.passed and verdict.status.infos == 1


def test_no_findings_pass_with_zero_counts() -> None:
    verdict = lint_verdict.decide([])
    assert verdict.passed and verdict.failing == 0 and verdict.status.findings == []


def test_findings_from_the_hadolint_adapter_fit() -> None:
    output = json.dumps(
        [
            {
                "code": "DL3006",
                "column": 1,
                "file": "-",
                "level": "error",
                "line": 1,
                "message": "tag",
            }
        ]
    )
    verdict = lint_verdict.decide(hadolint.parse_findings(output))
    assert not verdict.passed and verdict.status.findings[0].rule == "DL3006"
