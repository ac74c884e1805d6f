"""The model cache: LRU eviction (a pure choice) and the store that never shows a partial file."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import IO

import pytest

from edgeferry.adapters import model_fetch, model_store
from edgeferry.decisions import model_cache


def model(sha: str, size: int, used: float) -> model_cache.CachedModel:
    return model_cache.CachedModel(sha256=sha, size=size, last_used=used)


def test_a_cache_within_its_bound_evicts_nothing() -> None:
    assert model_cache.evictions([model("a", 5, 1), model("b", 5, 2)], limit_bytes=10) == []


def test_the_least_recently_used_models_go_until_the_cache_fits() -> None:
    cached = [model("new", 4, 30), model("old", 4, 10), model("mid", 4, 20)]
    assert model_cache.evictions(cached, limit_bytes=5) == ["old", "mid"]


def test_a_model_in_use_is_never_evicted_even_if_the_cache_stays_over() -> None:
    cached = [model("old", 8, 10), model("new", 8, 20)]
    assert model_cache.evictions(cached, limit_bytes=8, in_use={"old"}) == ["new"]
    assert model_cache.evictions(cached, limit_bytes=1, in_use={"old", "new"}) == []


def test_equal_last_use_is_broken_by_digest_not_listing_order() -> None:
    forward = [model("b", 4, 10), model("a", 4, 10)]
    assert model_cache.evictions(forward, limit_bytes=4) == ["a"]
    assert model_cache.evictions(list(reversed(forward)), limit_bytes=4) == ["a"]


# --- the store (a real folder) ------------------------------------------------------------------
DATA = b"model bytes " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def writer(data: bytes, calls: list[int] | None = None) -> model_store.Fetch:
    def fetch(into: IO[bytes]) -> model_fetch.Downloaded:
        if calls is not None:
            calls.append(1)
        into.write(data)
        return model_fetch.Downloaded(hashlib.sha256(data).hexdigest(), len(data))

    return fetch


def test_a_fetched_model_is_cached_under_its_sha256(tmp_path: Path) -> None:
    with model_store.held(tmp_path, SHA, fetch=writer(DATA), where="test") as path:
        assert path == model_store.path_of(tmp_path, SHA)
        assert path.read_bytes() == DATA
        assert model_store.in_use() == {SHA}
    assert model_store.in_use() == frozenset()


def test_a_cached_model_is_not_fetched_again(tmp_path: Path) -> None:
    calls: list[int] = []
    for _ in range(3):
        with model_store.held(tmp_path, SHA, fetch=writer(DATA, calls), where="test"):
            pass
    assert calls == [1]


def test_two_builds_wanting_one_digest_fetch_it_once(tmp_path: Path) -> None:
    calls: list[int] = []
    started = threading.Barrier(2)

    def build() -> None:
        started.wait()
        with model_store.held(tmp_path, SHA, fetch=writer(DATA, calls), where="test") as path:
            assert path.read_bytes() == DATA

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]


def test_other_bytes_are_a_mismatch_naming_both_digests_and_leave_nothing(tmp_path: Path) -> None:
    other = hashlib.sha256(b"another model").hexdigest()
    with (
        pytest.raises(model_fetch.DigestMismatchError) as raised,
        model_store.held(tmp_path, SHA, fetch=writer(b"another model"), where="the test"),
    ):
        pass
    assert SHA in str(raised.value) and other in str(raised.value)
    assert not model_store.path_of(tmp_path, SHA).exists()
    assert list((tmp_path / "partial").iterdir()) == []


def test_a_download_that_breaks_off_leaves_no_file_a_build_could_use(tmp_path: Path) -> None:
    def broken(into: IO[bytes]) -> model_fetch.Downloaded:
        into.write(DATA[:100])
        raise model_fetch.FetchError("connection reset", transient=True)

    with (
        pytest.raises(model_fetch.FetchError),
        model_store.held(tmp_path, SHA, fetch=broken, where="test"),
    ):
        pass
    assert not model_store.path_of(tmp_path, SHA).exists()
    assert list((tmp_path / "partial").iterdir()) == []
    assert model_store.in_use() == frozenset()


def test_delete_leaves_a_held_model_alone(tmp_path: Path) -> None:
    with model_store.held(tmp_path, SHA, fetch=writer(DATA), where="test") as path:
        model_store.delete(tmp_path, [SHA])
        assert path.exists()
    model_store.delete(tmp_path, [SHA])
    assert not path.exists()
    assert model_store.cached(tmp_path) == []
