"""Rewriting `FROM` lines that pin an image index to the child of one platform."""

from __future__ import annotations

from edgeferry.decisions import base_images

INDEX = "127.0.0.1:5000/base/python@sha256:" + "a" * 64
ARM = "127.0.0.1:5000/base/python@sha256:" + "b" * 64
OTHER = "registry.local/tools@sha256:" + "c" * 64


def test_pinned_bases_are_found_once_in_order_with_flags_and_stage_names() -> None:
    text = (
        f"FROM --platform=$TARGETPLATFORM {INDEX} AS build\n"
        "COPY x /x\n"
        f"from {OTHER}\n"
        f"FROM {INDEX}\n"
        "FROM scratch\n"
        "FROM python:3.11\n"
    )
    assert base_images.pinned_bases(text) == (INDEX, OTHER)


def test_only_from_lines_are_rewritten() -> None:
    text = f"FROM {INDEX} AS base\nLABEL org.example.base={INDEX}\nCOPY x /x\n"
    rewritten = base_images.for_platform(text, {INDEX: ARM})
    assert rewritten == f"FROM {ARM} AS base\nLABEL org.example.base={INDEX}\nCOPY x /x\n"


def test_bases_without_a_resolution_stay_as_they_are() -> None:
    text = f"FROM {OTHER}\nUSER 10001\n"
    assert base_images.for_platform(text, {INDEX: ARM}) == text
