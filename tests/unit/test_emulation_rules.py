"""Reading binfmt_misc entries and rules, as the testbed's emulation set-up does."""

from __future__ import annotations

import pytest

from edgeferry_testbed import emulation

REGISTERED = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def test_a_registered_rule_with_f_fixes_the_binary() -> None:
    entry = emulation.parse_entry(REGISTERED)
    assert entry == emulation.Entry(
        enabled=True, interpreter="/usr/libexec/qemu-binfmt/aarch64-binfmt-P", flags="POF"
    )
    assert entry.fixes_binary


def test_a_rule_without_f_does_not_fix_the_binary() -> None:
    assert not emulation.parse_entry(REGISTERED.replace("POF", "P")).fixes_binary


def test_a_disabled_rule_reads_as_disabled() -> None:
    assert not emulation.parse_entry(REGISTERED.replace("enabled", "disabled", 1)).enabled


def test_the_interpreter_is_the_seventh_field_of_a_rule() -> None:
    rule = r":qemu-aarch64:M::\x7f\x45:\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF"
    assert emulation.rule_interpreter(rule) == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"


def test_text_that_is_not_a_rule_is_refused_quoting_it() -> None:
    with pytest.raises(emulation.EmulationError, match="not a binfmt_misc rule: ':a:b'"):
        emulation.rule_interpreter(":a:b")
