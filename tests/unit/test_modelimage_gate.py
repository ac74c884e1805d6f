"""The admission gate: severities against failOn, onlyFixed, and exceptions with expiry."""

from __future__ import annotations

import datetime

from edgeferry.decisions import gate
from edgeferry.models import modelimage, vulnerabilities

TODAY = datetime.date(2026, 11, 27)


def finding(
    id_: str = "CVE-2023-37920",
    severity: str = "high",
    *,
    package: str = "certifi",
    installed: str = "2022.12.7",
    fixed_in: tuple[str, ...] = ("2023.7.22",),
    aliases: tuple[str, ...] = (),
) -> vulnerabilities.Finding:
    return vulnerabilities.Finding(
        id=id_,
        severity=severity,
        package=package,
        installed=installed,
        fixed_in=fixed_in,
        fix_state="fixed" if fixed_in else "not-fixed",
        aliases=aliases,
    )


def exception(id_: str, expires: datetime.date) -> modelimage.ScanException:
    return modelimage.ScanException(id=id_, reason="not reachable from the server", expires=expires)


def test_finding_at_fail_on_blocks() -> None:
    decision = gate.decide([finding(severity="high")], today=TODAY)
    assert not decision.admitted
    assert [b.id for b in decision.blocking] == ["CVE-2023-37920"]
    assert decision.condition.status == "False"
    assert decision.condition.reason == "VulnerabilitiesFound"


def test_finding_above_fail_on_blocks() -> None:
    assert not gate.decide([finding(severity="critical")], today=TODAY).admitted


def test_finding_below_fail_on_is_counted_but_admitted() -> None:
    decision = gate.decide([finding(severity="medium")], today=TODAY)
    assert decision.admitted
    assert decision.counts.medium == 1
    assert decision.condition.status == "True"
    assert "1 medium" in decision.condition.message


def test_stricter_fail_on_blocks_lower_severities() -> None:
    assert not gate.decide([finding(severity="low")], today=TODAY, fail_on="low").admitted


def test_unknown_severity_does_not_block_under_usual_policies() -> None:
    decision = gate.decide([finding(severity="Unknown")], today=TODAY, fail_on="low")
    assert decision.admitted and decision.counts.unknown == 1


def test_unknown_severity_blocks_under_fail_on_negligible() -> None:
    decision = gate.decide([finding(severity="Unknown")], today=TODAY, fail_on="negligible")
    assert not decision.admitted
    assert decision.blocking[0].severity == "unknown"


def test_severity_spelling_of_the_scanner_does_not_matter() -> None:
    decision = gate.decide([finding(severity="CRITICAL")], today=TODAY)
    assert decision.counts.critical == 1 and decision.blocking[0].severity == "critical"


def test_only_fixed_lets_findings_without_a_fix_through() -> None:
    unfixable = finding(severity="critical", fixed_in=())
    decision = gate.decide([unfixable], today=TODAY, only_fixed=True)
    assert decision.admitted and decision.counts.critical == 1


def test_only_fixed_still_blocks_findings_with_a_fix() -> None:
    assert not gate.decide([finding()], today=TODAY, only_fixed=True).admitted


def test_exception_matching_the_finding_id_admits() -> None:
    active = exception("CVE-2023-37920", TODAY + datetime.timedelta(days=30))
    decision = gate.decide([finding()], today=TODAY, exceptions=[active])
    assert decision.admitted
    assert decision.applied_exceptions == (active,)
    assert [f.id for f in decision.excepted] == ["CVE-2023-37920"]
    assert "excepted: CVE-2023-37920" in decision.condition.message


def test_cve_exception_covers_the_ghsa_that_aliases_it() -> None:
    ghsa = finding("GHSA-xqr8-7jwr-rhp7", aliases=("CVE-2023-37920",))
    active = exception("CVE-2023-37920", TODAY + datetime.timedelta(days=1))
    assert gate.decide([ghsa], today=TODAY, exceptions=[active]).admitted


def test_ghsa_exception_covers_the_cve_that_aliases_it() -> None:
    cve = finding("CVE-2023-37920", aliases=("GHSA-xqr8-7jwr-rhp7",))
    active = exception("GHSA-xqr8-7jwr-rhp7", TODAY + datetime.timedelta(days=1))
    assert gate.decide([cve], today=TODAY, exceptions=[active]).admitted


def test_exception_ids_match_case_insensitively() -> None:
    active = exception("cve-2023-37920", TODAY + datetime.timedelta(days=1))
    assert gate.decide([finding()], today=TODAY, exceptions=[active]).admitted


def test_expired_exception_stops_applying_and_is_reported() -> None:
    lapsed = exception("CVE-2023-37920", TODAY - datetime.timedelta(days=1))
    decision = gate.decide([finding()], today=TODAY, exceptions=[lapsed])
    assert not decision.admitted
    assert decision.expired_exceptions == ("CVE-2023-37920",)
    assert decision.applied_exceptions == ()
    assert decision.blocking[0].exception_expired == lapsed.expires
    assert "its exception expired on 2026-11-26" in decision.condition.message
    assert "expired exceptions no longer apply: CVE-2023-37920" in decision.condition.message


def test_exception_no_longer_applies_on_its_expiry_date() -> None:
    due_today = exception("CVE-2023-37920", TODAY)
    assert not gate.decide([finding()], today=TODAY, exceptions=[due_today]).admitted


def test_exception_still_applies_the_day_before_its_expiry_date() -> None:
    tomorrow = exception("CVE-2023-37920", TODAY + datetime.timedelta(days=1))
    assert gate.decide([finding()], today=TODAY, exceptions=[tomorrow]).admitted


def test_expired_exceptions_are_listed_even_when_nothing_matches_them() -> None:
    stale = exception("CVE-2001-0001", TODAY - datetime.timedelta(days=400))
    decision = gate.decide([], today=TODAY, exceptions=[stale])
    assert decision.admitted and decision.expired_exceptions == ("CVE-2001-0001",)


def test_active_exceptions_that_match_nothing_are_not_listed_as_applied() -> None:
    unused = exception("CVE-2001-0001", TODAY + datetime.timedelta(days=1))
    decision = gate.decide([finding(severity="low")], today=TODAY, exceptions=[unused])
    assert decision.applied_exceptions == ()


def test_blocking_findings_are_bounded_worst_first_with_the_total() -> None:
    highs = [finding(f"CVE-2024-{n:04d}", "high", package=f"p{n}") for n in range(30)]
    critical = finding("CVE-2024-9999", "critical", package="openssl")
    decision = gate.decide([*highs, critical], today=TODAY)
    assert len(decision.blocking) == gate.MAX_BLOCKING
    assert decision.blocking_total == 31
    assert decision.blocking[0].id == "CVE-2024-9999"
    assert "and 26 more in status.scan.blocking" in decision.condition.message


def test_fixable_findings_come_before_unfixable_ones_of_the_same_severity() -> None:
    unfixable = finding("CVE-2024-0001", fixed_in=())
    fixable = finding("CVE-2024-0002")
    decision = gate.decide([unfixable, fixable], today=TODAY)
    assert [b.id for b in decision.blocking] == ["CVE-2024-0002", "CVE-2024-0001"]


def test_the_same_finding_reported_twice_counts_once() -> None:
    twice = [finding(aliases=("GHSA-a",)), finding(aliases=("GHSA-b",))]
    decision = gate.decide(twice, today=TODAY)
    assert decision.counts.high == 1 and decision.blocking_total == 1


def test_same_advisory_in_two_packages_counts_twice() -> None:
    two = [finding(package="certifi"), finding(package="certifi-vendored")]
    assert gate.decide(two, today=TODAY).blocking_total == 2


def test_blocking_finding_names_package_installed_and_fixed_versions() -> None:
    blocked = gate.decide([finding()], today=TODAY).blocking[0]
    assert (blocked.package, blocked.installed, blocked.fixed_in) == (
        "certifi",
        "2022.12.7",
        "2023.7.22",
    )


def test_decision_fits_the_status_schema() -> None:
    lapsed = exception("CVE-2023-37920", TODAY - datetime.timedelta(days=1))
    applied = exception("CVE-2024-0001", TODAY + datetime.timedelta(days=1))
    decision = gate.decide(
        [finding(), finding("CVE-2024-0001", "critical")], today=TODAY, exceptions=[lapsed, applied]
    )
    scan = modelimage.ScanStatus(
        counts=decision.counts,
        blocking=list(decision.blocking),
        blocking_total=decision.blocking_total,
        excepted=list(decision.applied_exceptions),
        expired_exceptions=list(decision.expired_exceptions),
    )
    dumped = modelimage.ModelImageStatus(scan=scan).to_patch()["scan"]
    assert dumped["blocking"][0]["exceptionExpired"] == "2026-11-26"
    assert dumped["excepted"] == [
        {"id": "CVE-2024-0001", "reason": "not reachable from the server", "expires": "2026-11-28"}
    ]


# --- several platforms --------------------------------------------------------------------------


def test_union_of_platform_findings_counts_a_shared_finding_once() -> None:
    shared = vulnerabilities.Finding(
        id="CVE-1", severity="High", package="openssl", installed="3.0.1"
    )
    arm_only = vulnerabilities.Finding(id="CVE-2", severity="Low", package="zlib", installed="1.2")
    union = gate.union([[shared], [shared, arm_only]])
    assert union == (shared, arm_only)
    decision = gate.decide(union, today=datetime.date(2026, 1, 1))
    assert (decision.counts.high, decision.counts.low) == (1, 1)
    assert not decision.admitted


def test_union_merges_aliases_of_the_same_finding_seen_in_two_platforms() -> None:
    amd = vulnerabilities.Finding(
        id="GHSA-1", severity="High", package="p", installed="1", aliases=("A",)
    )
    arm = vulnerabilities.Finding(
        id="GHSA-1", severity="High", package="p", installed="1", aliases=("B",)
    )
    (merged,) = gate.union([[amd], [arm]])
    assert merged.aliases == ("A", "B")
