"""A second registry process with storage of its own: an air-gapped site's `registryMirror`.

The testbed's registry runs as two processes on one storage (127.0.0.1 and the host address),
so it cannot stand for a mirror: anything pushed to one is already in the other. This is a
third Debian `docker-registry`, on `layout.Layout.site_mirror` (the host address, so the real
nodes' containerd can pull from it; `up` tells containerd it speaks plain HTTP), with its own
config and an empty data directory per test session, started here and stopped by its pid.
With `users` it asks for basic auth (an htpasswd file, bcrypt hashes made by the host's
libcrypt), as a site's own registry usually does.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from edgeferry_testbed import handles, layout
from tests.unit import _binaries


def _answers(address: str) -> bool:
    """Whether a registry answers there (200, or 401 when it asks for credentials)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        return error.code == 401
    except (urllib.error.URLError, OSError):
        return False


def _bcrypt(password: str) -> str:
    """A bcrypt hash (`$2b$`) for htpasswd, from libcrypt (Python's `crypt` is deprecated)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt"))
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    hashed = lib.crypt(password.encode(), salt)
    assert hashed and hashed.startswith(b"$2b$"), hashed
    return str(hashed.decode())


@contextlib.contextmanager
def running(address: str, home: Path, *, users: Mapping[str, str] | None = None) -> Iterator[Path]:
    """Run a registry at `address` storing under `home/data` (basic auth for `users`, name ->
    password, when given); yields the data directory."""
    binary = _binaries.debian("docker-registry", "docker-registry")
    assert not _answers(address), f"something already serves a registry at {address}"
    data = home / "data"
    data.mkdir(parents=True)
    config = home / "config.yml"
    auth = ""
    if users:
        htpasswd = home / "htpasswd"
        htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: site-mirror\n    path: {htpasswd}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n" + auth
    )
    log = (home / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not _answers(address):
            assert process.poll() is None, (home / "registry.log").read_text()
            assert time.monotonic() < deadline, f"the mirror at {address} did not answer"
            time.sleep(0.2)
        yield data
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def site_mirror(
    testbed_handle: handles.Testbed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The site mirror for one test module: `host:port` of an empty registry of its own."""
    address = layout.default_layout().site_mirror
    with running(address, tmp_path_factory.mktemp("site-mirror")):
        yield address


MIRROR_USER, MIRROR_PASSWORD = "site-a", "mirror-secret"
"""The one user of `site_mirror_with_auth`."""


@pytest.fixture(scope="module")
def site_mirror_with_auth(
    testbed_handle: handles.Testbed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A site mirror that asks for basic auth (`MIRROR_USER`), on loopback (plain HTTP)."""
    address = f"127.0.0.1:{layout.default_layout().site_mirror_port + 1}"
    users = {MIRROR_USER: MIRROR_PASSWORD}
    with running(address, tmp_path_factory.mktemp("site-mirror-auth"), users=users):
        yield address
