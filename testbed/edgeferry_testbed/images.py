"""Base images made on this machine, without any image hub, pushed to the local registry.

No hub is reachable here, so every image the tests and samples build starts from a base we make
ourselves: a static busybox rootfs (seconds, for tiny test images), a debootstrapped Debian with
python3 and scikit-learn (minutes, for real model servers; the arm64 one under emulation), an
arm64-only image (so rollouts can be refused on nodes of the wrong architecture), and a Debian
dockerd for Docker in Docker (a second daemon, and the chart's dind build backend). Each is
referred to by the registry's manifest digest, never by tag, as a user's Dockerfile should pin
its base.

Making the sklearn base is slow, so each image records a marker under
``~/.cache/edgeferry/images/``: a hash of the recipe and the digest the registry served. When the
registry still serves that digest under the tag, nothing is rebuilt; when the registry was wiped
but the daemon still has the image, it is only pushed again.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, TypeAlias

import docker
import docker.errors

from edgeferry.adapters import docker_build, index_push, registry
from edgeferry_testbed import apt_sources, rootfs

CACHE_DIR = pathlib.Path(os.environ.get("EDGEFERRY_CACHE", "~/.cache/edgeferry")).expanduser()
MARKER_DIR = CACHE_DIR / "images"
SKLEARN_PACKAGES = (
    "python3-minimal",
    "python3-sklearn",
    "python3-prometheus-client",
    "ca-certificates",
)
"""Debian packages of the sklearn bases: the `sklearn-http` server exports its metrics with
prometheus_client (pure Python, so Debian's arch-independent package serves both platforms)."""
SKLEARN_VARIANT = "prom"
"""Names the sklearn bases' markers and tags (`python-sklearn-prom`, `bookworm-prom`), so the
recipe with prometheus_client and the one before it (other checkouts on the same machine) keep
their own cached images instead of rebuilding each other's in turn; change it with the package
list."""
RECIPE_LABEL = "edgeferry.io/base-recipe"
# Bump when a recipe below changes in a way that changes the image.
_RECIPE_VERSION = "2"

ImageRecipeError = rootfs.ImageRecipeError
"""A base image could not be made (debootstrap, import or push failed)."""


@dataclasses.dataclass(frozen=True)
class _Marker:
    inputs: str
    reference: str
    image_id: str

    @property
    def digest(self) -> str:
        return self.reference.rsplit("@", 1)[1]


ClientLike: TypeAlias = "docker.DockerClient | docker.APIClient"


# -- public recipes -----------------------------------------------------------------------------
#
# Every image is made the same way (`_make`): its inputs are hashed first; under a lock per
# image, the marker of an earlier run is reused when the registry (or at least the daemon) still
# has that recipe; otherwise the recipe's own `build` runs and the result is pushed and
# remembered. The OCI index of the multi-arch base has no local image, so it is reused from the
# registry only and its push is its build.


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """One image this module makes: where it goes, and the hash of what it is made from."""

    key: str
    """Names its marker and lock under `MARKER_DIR`; unchanged keys reuse cached images."""
    repository: str
    tag: str
    inputs: str


def _make(api: docker.APIClient, recipe: _Recipe, build: Callable[[], str]) -> str:
    """The pinned reference of `recipe`: reused when cached, else built (`build` returns the
    image id) and pushed."""
    with _exclusive(recipe.key):
        cached = _reuse(api, recipe)
        if cached:
            return cached
        return _push_and_remember(api, recipe, build())


def ensure_busybox_base(
    docker_client: ClientLike, registry_host: str, *, platform: str = "linux/amd64"
) -> str:
    """``<registry>/base/busybox@sha256:...``: Debian's static busybox with all its applets.

    Only the host's architecture is possible: the binary comes from the host's busybox-static.
    """
    api = _api(docker_client)
    host_platform = _host_platform()
    if platform != host_platform:
        raise ValueError(
            f"busybox base can only be made for {host_platform} (the host's "
            f"busybox-static), not {platform}"
        )
    if not rootfs.BUSYBOX_BINARY.is_file():
        raise ImageRecipeError(f"{rootfs.BUSYBOX_BINARY} missing: apt-get install busybox-static")
    recipe = _Recipe(
        key="busybox",
        repository=f"{registry_host}/base/busybox",
        tag=rootfs.busybox_version(),
        inputs=_digest_of(
            "busybox", _RECIPE_VERSION, platform, _file_sha256(rootfs.BUSYBOX_BINARY)
        ),
    )

    def build() -> str:
        with _step("busybox rootfs + import"):
            changes = [
                "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                'CMD ["sh"]',
                f"LABEL {RECIPE_LABEL}={recipe.inputs}",
            ]
            return _import(
                api, rootfs.busybox_rootfs(), recipe.repository, recipe.tag, changes=changes
            )

    return _make(api, recipe, build)


PAUSE_SOURCE = pathlib.Path(__file__).resolve().parents[1] / "pause" / "pause.c"


def ensure_pause_image(docker_client: ClientLike, registry_host: str) -> str:
    """``<registry>/edgeferry/pause@sha256:...``: the Pod sandbox image of the real nodes.

    containerd needs one to hold each Pod's namespaces and no hub is reachable for
    registry.k8s.io/pause, so ours is a static C program built here with gcc (about 20 lines:
    sleep until TERM, reap orphans). Only the host's architecture: real nodes run natively.
    """
    api = _api(docker_client)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageRecipeError("gcc is missing (the pause image is compiled): apt-get install gcc")
    recipe = _Recipe(
        key="pause",
        repository=f"{registry_host}/edgeferry/pause",
        tag="1",
        inputs=_digest_of("pause", _RECIPE_VERSION, _host_platform(), _file_sha256(PAUSE_SOURCE)),
    )

    def build() -> str:
        with _step("pause: gcc -static + import"), tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp) / "root"
            root.mkdir()
            rootfs.run(
                [gcc, "-O2", "-static", "-s", "-o", str(root / "pause"), str(PAUSE_SOURCE)],
                what="compile the pause program",
            )
            changes = ['ENTRYPOINT ["/pause"]', f"LABEL {RECIPE_LABEL}={recipe.inputs}"]
            return _import(
                api, rootfs.tar_directory(root), recipe.repository, recipe.tag, changes=changes
            )

    return _make(api, recipe, build)


def ensure_python_sklearn_base(
    docker_client: ClientLike,
    registry_host: str,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    packages: Sequence[str] = SKLEARN_PACKAGES,
) -> str:
    """``<registry>/base/python-sklearn:<suite>`` pinned: debootstrapped Debian with sklearn.

    Minimal variant, apt lists/caches/docs stripped, a non-root user ``app`` (uid 10001).
    The first call takes minutes (debootstrap); later calls reuse the registry's copy.
    """
    api = _api(docker_client)
    recipe = _Recipe(
        key=f"python-sklearn-{SKLEARN_VARIANT}",
        repository=f"{registry_host}/base/python-sklearn",
        tag=f"{suite}-{SKLEARN_VARIANT}",
        inputs=_digest_of("python-sklearn", _RECIPE_VERSION, suite, *sorted(packages)),
    )

    def build() -> str:
        if shutil.which("debootstrap") is None:
            raise ImageRecipeError("debootstrap missing: apt-get install debootstrap")
        _remove_stale_workdirs("python-sklearn-")
        return _debootstrap_image(
            api,
            recipe.repository,
            suite,
            inputs=recipe.inputs,
            mirror=mirror or host_debian_mirror(),
            packages=packages,
        )

    return _make(api, recipe, build)


def ensure_python_sklearn_arm64_base(
    docker_client: ClientLike,
    registry_host: str,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    packages: Sequence[str] = SKLEARN_PACKAGES,
) -> str:
    """``<registry>/base/python-sklearn:<suite>-arm64-configured`` pinned: the same base for
    linux/arm64, made the same way as the amd64 one.

    debootstrap runs its second stage, Debian's maintainer scripts, as arm64 code under
    emulation (`emulation.ensure_arm64`, which `up` and `base-images` run first): minutes
    slower than the amd64 base. An earlier recipe only unpacked the packages (no emulation
    then); its numpy could not load, because the alternatives links a postinst makes (libblas.so.3)
    were missing, which nothing saw until the smoke test ran arm64. "configured" in the key and
    tag keeps the two recipes' markers and tags apart. The image is built ``FROM scratch`` +
    ``ADD rootfs.tar`` for linux/arm64, because ``docker import`` on Engine 20.10 cannot record a
    foreign platform.
    """
    api = _api(docker_client)
    recipe = _Recipe(
        key=f"python-sklearn-arm64-configured-{SKLEARN_VARIANT}",
        repository=f"{registry_host}/base/python-sklearn",
        tag=f"{suite}-arm64-configured-{SKLEARN_VARIANT}",
        inputs=_digest_of(
            "python-sklearn-arm64-configured", _RECIPE_VERSION, suite, *sorted(packages)
        ),
    )

    def build() -> str:
        if shutil.which("debootstrap") is None:
            raise ImageRecipeError("debootstrap missing: apt-get install debootstrap")
        _remove_stale_workdirs("arm64-python-sklearn-")
        with tempfile.TemporaryDirectory(prefix="arm64-python-sklearn-", dir=MARKER_DIR) as work:
            tree = pathlib.Path(work) / "rootfs"
            try:
                with _step(f"debootstrap --arch=arm64 {suite} (second stage emulated)"):
                    command = [
                        "debootstrap",
                        "--arch=arm64",
                        "--variant=minbase",
                        f"--include={','.join(packages)}",
                        suite,
                        str(tree),
                        mirror or host_debian_mirror(),
                    ]
                    rootfs.run(command, what="debootstrap --arch=arm64")
                with _step("purge build-only packages (emulated)"):
                    rootfs.prune_packages(tree)
                with _step("strip caches, docs, apt lists, test suites; add user app"):
                    rootfs.strip(tree)
                    rootfs.add_user(tree, "app", rootfs.APP_UID)
                with _step("build FROM scratch + rootfs for linux/arm64"):
                    result = docker_build.build_image(
                        api,
                        "FROM scratch\nADD rootfs.tar /\n"
                        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                        "ENV LANG=C.UTF-8\nENV PYTHONUNBUFFERED=1\n"
                        'CMD ["python3"]\n',
                        files={"rootfs.tar": rootfs.tar_directory(tree)},
                        tag=f"{recipe.repository}:{recipe.tag}",
                        labels={RECIPE_LABEL: recipe.inputs},
                        platform="linux/arm64",
                        timeout_s=900,
                    )
            finally:
                rootfs.unmount_below(tree)
        if result.architecture != "arm64":
            raise ImageRecipeError(f"daemon built {result.architecture}, not arm64")
        print(f"[images] python-sklearn arm64 image size: {result.size_bytes / 1e6:.0f} MB")
        return result.image_id

    return _make(api, recipe, build)


def ensure_python_sklearn_multiarch_base(
    docker_client: ClientLike, registry_host: str, *, suite: str = "bookworm"
) -> str:
    """``<registry>/base/python-sklearn:<suite>-multiarch`` pinned: an OCI index of the amd64
    and arm64 bases, so one ``FROM`` serves a ModelImage built for both platforms (the classic
    builder pulls the child of the platform it builds)."""
    api = _api(docker_client)
    amd64 = ensure_python_sklearn_base(docker_client, registry_host, suite=suite)
    arm64 = ensure_python_sklearn_arm64_base(docker_client, registry_host, suite=suite)
    recipe = _Recipe(
        key=f"python-sklearn-multiarch-{SKLEARN_VARIANT}",
        repository=f"{registry_host}/base/python-sklearn",
        tag=f"{suite}-multiarch-{SKLEARN_VARIANT}",
        inputs=_digest_of("python-sklearn-multiarch", _RECIPE_VERSION, amd64, arm64),
    )
    return _push_index(api, recipe, {"linux/amd64": amd64, "linux/arm64": arm64})


ONNXRUNTIME_VERSION = "1.27.0"
"""The newest onnxruntime whose arm64 wheel runs under Debian 12's qemu-user 7.2, which the smoke
test of the arm64 image needs: 1.28.0, 1.29.0, 1.30.0, 1.31.1 and 1.32.0 die with SIGSEGV while
their extension module loads (and the container does not exit); 1.27.0 imports, loads and
predicts there. Not tried on arm64 hardware."""
ONNXRUNTIME_WHEELS: Mapping[str, tuple[str, str]] = {
    "linux/amd64": (
        f"onnxruntime-{ONNXRUNTIME_VERSION}-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "e4f7b0e90d2d212e2c2deaa6c8291616183ab815d3ec558ea12d3ac8b26d36f4",
    ),
    "linux/arm64": (
        f"onnxruntime-{ONNXRUNTIME_VERSION}-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "2eb083321af8a236a84c7c140a7f4cecbfa2a987a18c07c78db471c20cd390ef",
    ),
}
"""The onnxruntime wheel of each platform (CPython 3.11, Debian 12's python3) and its sha256:
PyPI's file, checked after download, so a changed upload cannot slip into the base."""
_WHEEL_PLATFORMS = {
    "linux/amd64": ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64"),
    "linux/arm64": ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64"),
}
_SITE_PACKAGES = "/usr/local/lib/python3.11/dist-packages/"
"""Where Debian's python3 looks for packages not installed by apt (on sys.path, empty in the
sklearn base)."""


def pip_download(
    requirements: Sequence[str], platform: str, *, into: pathlib.Path = CACHE_DIR / "wheels"
) -> None:
    """Download the wheels of `requirements` (exact pins, no dependencies) for CPython 3.11 on
    `platform` into `into`: pip on this host, no emulation, binary wheels only."""
    tags = [f"--platform={tag}" for tag in _WHEEL_PLATFORMS[platform]]
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += [*tags, "--python-version=3.11", "--implementation=cp", "--abi=cp311"]
    rootfs.run([*command, "-d", str(into), *requirements], what=f"pip download for {platform}")


def wheels_tar(wheels: Iterable[pathlib.Path]) -> bytes:
    """The wheels unpacked into one tree, as a tar owned by root (what `pip install --target`
    would lay out, without running pip in the image)."""
    with tempfile.TemporaryDirectory(prefix="wheels-") as tmp:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(tmp)
        return rootfs.tar_directory(pathlib.Path(tmp))


def _onnxruntime_wheel(platform: str) -> pathlib.Path:
    name, sha256 = ONNXRUNTIME_WHEELS[platform]
    path = CACHE_DIR / "wheels" / name
    if not path.exists():
        pip_download([f"onnxruntime=={ONNXRUNTIME_VERSION}"], platform)
    if not path.exists():
        raise ImageRecipeError(f"pip did not download {name} for {platform}")
    if _file_sha256(path) != sha256:
        path.unlink()
        raise ImageRecipeError(f"{name} does not have the pinned sha256 {sha256}; removed it")
    return path


def ensure_python_onnxruntime_base(
    docker_client: ClientLike,
    registry_host: str,
    *,
    platform: str = "linux/amd64",
    suite: str = "bookworm",
) -> str:
    """``<registry>/base/python-onnxruntime:<version>-<arch>`` pinned: the sklearn base of that
    platform plus one layer, PyPI's onnxruntime wheel unpacked into ``/usr/local/lib/python3.11
    /dist-packages`` (it uses the base's numpy; its other dependencies, flatbuffers, packaging
    and protobuf, serve only its tools, not an InferenceSession, so they are left out).

    No emulation and no compiler: pip downloads the wheel here (`--platform`), and the image is
    ``FROM`` the base + ``ADD`` of the tree, which the classic builder does without running a
    binary of the target platform. Seconds, not the minutes a second debootstrap would cost
    (the arm64 one emulated); the trade-off is size, since scikit-learn and SciPy come along
    (about 260 MB shared with the sklearn images, which nodes that run those already have).
    """
    if platform not in ONNXRUNTIME_WHEELS:
        raise ValueError(f"no onnxruntime wheel pinned for {platform}")
    api = _api(docker_client)
    if platform == "linux/amd64":
        base = ensure_python_sklearn_base(docker_client, registry_host, suite=suite)
    else:
        base = ensure_python_sklearn_arm64_base(docker_client, registry_host, suite=suite)
    arch = platform.split("/", 1)[1]
    recipe = _Recipe(
        key=f"python-onnxruntime-{arch}",
        repository=f"{registry_host}/base/python-onnxruntime",
        tag=f"{ONNXRUNTIME_VERSION}-{arch}",
        inputs=_digest_of(
            "python-onnxruntime", _RECIPE_VERSION, platform, base, ONNXRUNTIME_WHEELS[platform][1]
        ),
    )

    def build() -> str:
        with _step(f"onnxruntime {ONNXRUNTIME_VERSION} wheel for {platform}"):
            tree = wheels_tar([_onnxruntime_wheel(platform)])
        _ensure_local(api, base)
        with _step(f"build FROM the sklearn base + onnxruntime for {platform}"):
            result = docker_build.build_image(
                api,
                f"FROM {base}\nADD onnxruntime.tar {_SITE_PACKAGES}\n",
                files={"onnxruntime.tar": tree},
                tag=f"{recipe.repository}:{recipe.tag}",
                labels={RECIPE_LABEL: recipe.inputs},
                platform=platform,
                timeout_s=600,
            )
        if platform == _host_platform():
            with _step("import check: onnxruntime loads"):
                _check_import(api, result.image_id, "onnxruntime")
        print(f"[images] python-onnxruntime {arch} image size: {result.size_bytes / 1e6:.0f} MB")
        return result.image_id

    return _make(api, recipe, build)


def ensure_python_onnxruntime_multiarch_base(
    docker_client: ClientLike, registry_host: str, *, suite: str = "bookworm"
) -> str:
    """``<registry>/base/python-onnxruntime:<version>-multiarch`` pinned: the OCI index of the
    amd64 and arm64 onnxruntime bases, for ModelImages built for both platforms."""
    children = {
        platform: ensure_python_onnxruntime_base(
            docker_client, registry_host, platform=platform, suite=suite
        )
        for platform in ONNXRUNTIME_WHEELS
    }
    recipe = _Recipe(
        key="python-onnxruntime-multiarch",
        repository=f"{registry_host}/base/python-onnxruntime",
        tag=f"{ONNXRUNTIME_VERSION}-multiarch",
        inputs=_digest_of("python-onnxruntime-multiarch", _RECIPE_VERSION, *children.values()),
    )
    return _push_index(_api(docker_client), recipe, children)


def _push_index(api: docker.APIClient, recipe: _Recipe, children: Mapping[str, str]) -> str:
    """The pinned reference of an OCI index of `children` (platform -> pinned image), reused
    from the registry when the marker says it still serves it."""
    with _exclusive(recipe.key):
        marker = _read_marker(recipe.key)
        if marker is not None and _served(recipe, marker):
            return marker.reference
        with _step(f"push the index {recipe.repository}:{recipe.tag}"):
            pushed = index_push.push_index(
                api,
                [index_push.PlatformBuild(p, _local_id(api, ref)) for p, ref in children.items()],
                recipe.repository,
                [recipe.tag],
            )
        return _remember(recipe, f"{recipe.repository}@{pushed.digest}", image_id="")


def _check_import(api: docker.APIClient, image_id: str, module: str) -> None:
    """``import <module>`` in the image (host platform only), as uid 10001."""
    run_python(api, image_id, f"import {module}", timeout_s=120)


def ensure_arm64_only_image(
    docker_client: ClientLike,
    registry_host: str,
    *,
    name: str = "test/arm64-only",
    tag: str = "v1",
) -> str:
    """A tiny image whose config says ``linux/arm64`` only, pushed; returns the pinned ref.

    Built ``FROM scratch`` with a COPY only, so no arm64 code ever has to run here (the classic
    builder records the requested platform; ``docker import --platform`` on Engine 20.10 does
    not). Rollout tests use it to prove an image is refused on targets without arm64 nodes.
    """
    api = _api(docker_client)
    recipe = _Recipe(
        key=f"arm64-only-{name.replace('/', '-')}-{tag}",
        repository=f"{registry_host}/{name}",
        tag=tag,
        inputs=_digest_of("arm64-only", _RECIPE_VERSION, name),
    )

    def build() -> str:
        with _step("build arm64-only image"):
            result = docker_build.build_image(
                api,
                'FROM scratch\nCOPY hello.txt /hello.txt\nCMD ["/hello"]\n',
                files={"hello.txt": b"an arm64-only image made by the edgeferry testbed\n"},
                labels={RECIPE_LABEL: recipe.inputs},
                platform="linux/arm64",
            )
        if result.architecture != "arm64":
            raise ImageRecipeError(f"daemon built {result.architecture}, not arm64")
        return result.image_id

    reference = _make(api, recipe, build)
    with registry.RegistryClient() as client:
        served = client.platforms(recipe.repository, reference.rsplit("@", 1)[1])
    if served != ("linux/arm64",):
        raise ImageRecipeError(
            f"registry says {recipe.repository}:{tag} is {served}, not linux/arm64"
        )
    return reference


DIND_PACKAGES = ("docker.io", "iptables", "ca-certificates")
DIND_REPOSITORY = "edgeferry/dind"


def ensure_dind_image(
    docker_client: ClientLike,
    registry_host: str,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    packages: Sequence[str] = DIND_PACKAGES,
) -> str:
    """``<registry>/edgeferry/dind:<suite>`` pinned: Debian's dockerd, to run Docker in Docker.

    The build backend of an operator Pod (the chart's ``build.backend=dind``) and the second,
    remote daemon of the smoke tests, made here because no hub is reachable. The entrypoint is
    ``dockerd`` itself, so the container's command line is dockerd's arguments; it needs
    ``privileged`` and a data root that is not on overlayfs (a volume or an emptyDir).
    """
    api = _api(docker_client)
    recipe = _Recipe(
        key="dind",
        repository=f"{registry_host}/{DIND_REPOSITORY}",
        tag=suite,
        inputs=_digest_of("dind", _RECIPE_VERSION, suite, *sorted(packages)),
    )

    def build() -> str:
        if shutil.which("debootstrap") is None:
            raise ImageRecipeError("debootstrap missing: apt-get install debootstrap")
        _remove_stale_workdirs("dind-")
        with tempfile.TemporaryDirectory(prefix="dind-", dir=MARKER_DIR) as work:
            tree = pathlib.Path(work) / "rootfs"
            try:
                source = mirror or host_debian_mirror()
                with _step(f"debootstrap {suite} with {', '.join(packages)} from {source}"):
                    include = f"--include={','.join(packages)}"
                    command = ["debootstrap", "--variant=minbase", include, suite, str(tree)]
                    rootfs.run([*command, source], what="debootstrap")
                with _step("strip caches, docs, apt lists"):
                    rootfs.strip(tree)
                tarball = pathlib.Path(work) / "rootfs.tar"
                with _step("tar rootfs"):
                    command = ["tar", "--numeric-owner", "--sort=name", "--xattrs", "-C", str(tree)]
                    rootfs.run([*command, "-cf", str(tarball), "."], what="tar")
                with _step("docker import"), tarball.open("rb") as data:
                    changes = [
                        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        'ENTRYPOINT ["/usr/sbin/dockerd"]',
                        "VOLUME /var/lib/docker",
                        f"LABEL {RECIPE_LABEL}={recipe.inputs}",
                    ]
                    image_id = _import(api, data, recipe.repository, suite, changes=changes)
            finally:
                rootfs.unmount_below(tree)
        size = api.inspect_image(image_id).get("Size", 0)
        print(f"[images] dind image size: {size / 1e6:.0f} MB")
        return image_id

    return _make(api, recipe, build)


_TRAIN_SCRIPT = """
import base64, pickle, sys
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
features, labels = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000).fit(features, labels)
sys.stdout.write(base64.b64encode(pickle.dumps(model)).decode())
"""


def make_sklearn_model(
    docker_client: ClientLike,
    base_ref: str,
    *,
    timeout_s: int = 300,
    script: str = _TRAIN_SCRIPT,
) -> bytes:
    """Train LogisticRegression on iris inside ``base_ref``; return the pickle bytes.

    Trained in the image that will serve it, so the pickle matches that image's sklearn.
    `script` trains another model the same way: it writes the base64 pickle to stdout.
    """
    return base64.b64decode(run_python(docker_client, base_ref, script, timeout_s=timeout_s))


def run_python(
    docker_client: ClientLike,
    image: str,
    script: str,
    *,
    files: bytes | None = None,
    environment: Mapping[str, str] | None = None,
    timeout_s: int = 300,
) -> bytes:
    """Run ``python3 -c script`` in `image` as uid 10001 without network; its stdout.

    `files`, a tar, is unpacked into ``/tmp`` first (its entries should be one folder, so /tmp
    itself keeps its mode). Raises ImageRecipeError with the log tail when the script fails.
    """
    api = _api(docker_client)
    _ensure_local(api, image)
    container = api.create_container(
        image,
        command=["python3", "-c", script],
        user=str(rootfs.APP_UID),
        network_disabled=True,
        environment=dict(environment or {}),
        labels={"edgeferry.io/testbed": "run-python"},
    )
    container_id = str(container["Id"])
    try:
        if files is not None:
            api.put_archive(container_id, "/tmp", files)
        api.start(container_id)
        status = api.wait(container_id, timeout=timeout_s)
        if status.get("StatusCode") != 0:
            log = api.logs(container_id, stdout=True, stderr=True, tail=20).decode(errors="replace")
            raise ImageRecipeError(f"script failed in {image} ({status}): {log}")
        output: bytes = api.logs(container_id, stdout=True, stderr=False)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(container_id, force=True)
    return output


def host_debian_mirror(*, sources_dir: pathlib.Path = pathlib.Path("/etc/apt")) -> str:
    """The plain Debian mirror the host's apt uses (see `apt_sources`); HTTP preferred."""
    mirrors = apt_sources.debian_mirrors(sources_dir)
    if not mirrors:
        raise ImageRecipeError(f"no Debian mirror found in {sources_dir}/sources.list(.d)")
    return mirrors[0]


# -- helpers ------------------------------------------------------------------------------------


def _debootstrap_image(
    api: docker.APIClient,
    repository: str,
    suite: str,
    *,
    inputs: str,
    mirror: str,
    packages: Sequence[str],
) -> str:
    """debootstrap, strip, add the app user, tar, import; returns the local image id."""
    with tempfile.TemporaryDirectory(prefix="python-sklearn-", dir=MARKER_DIR) as work:
        tree = pathlib.Path(work) / "rootfs"
        tarball = pathlib.Path(work) / "rootfs.tar"
        try:
            with _step(f"debootstrap {suite} from {mirror}"):
                include = f"--include={','.join(packages)}"
                command = ["debootstrap", "--variant=minbase", include, suite, str(tree), mirror]
                rootfs.run(command, what="debootstrap")
            with _step("purge build-only packages"):
                rootfs.prune_packages(tree)
            with _step("strip caches, docs, apt lists, test suites; add user app"):
                rootfs.strip(tree)
                rootfs.add_user(tree, "app", rootfs.APP_UID)
            with _step("tar rootfs"):
                command = ["tar", "--numeric-owner", "--sort=name", "--xattrs", "-C", str(tree)]
                rootfs.run([*command, "-cf", str(tarball), "."], what="tar")
            print(f"[images] rootfs tar: {tarball.stat().st_size / 1e6:.0f} MB")
            with _step("docker import"), tarball.open("rb") as data:
                changes = [
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    "ENV PYTHONUNBUFFERED=1",
                    'CMD ["python3"]',
                    f"LABEL {RECIPE_LABEL}={inputs}",
                ]
                image_id = _import(api, data, repository, suite, changes=changes)
        finally:
            rootfs.unmount_below(tree)
    size = api.inspect_image(image_id).get("Size", 0)
    print(f"[images] python-sklearn image size: {size / 1e6:.0f} MB")
    return image_id


@contextlib.contextmanager
def _exclusive(key: str) -> Iterator[None]:
    """One maker per image at a time, across processes (a testbed-up and a test run, say)."""
    MARKER_DIR.mkdir(parents=True, exist_ok=True)
    with (MARKER_DIR / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_workdirs(prefix: str) -> None:
    """Work directories of an interrupted run (we hold the lock, so nobody else uses them)."""
    for stale in MARKER_DIR.glob(f"{prefix}*"):
        if stale.is_dir():
            print(f"[images] removing stale work directory {stale}")
            rootfs.unmount_below(stale)
            shutil.rmtree(stale, ignore_errors=True)


def _api(client: ClientLike) -> docker.APIClient:
    if isinstance(client, docker.DockerClient):
        api: docker.APIClient = client.api
        return api
    return client


def _host_platform() -> str:
    machine = os.uname().machine
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"[images] {what} ...", flush=True)
    yield
    print(f"[images] {what}: {time.monotonic() - started:.1f}s", flush=True)


def _digest_of(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _file_sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import(
    api: docker.APIClient,
    data: bytes | BinaryIO,
    repository: str,
    tag: str,
    *,
    changes: Iterable[str],
) -> str:
    """``docker import`` through the Engine API; returns the image id."""
    try:
        result = api.import_image_from_data(
            data, repository=repository, tag=tag, changes=list(changes)
        )
    except docker.errors.APIError as error:
        raise ImageRecipeError(
            f"import of {repository}:{tag} failed: {error.explanation}"
        ) from error
    image_id = _import_status(result)
    return str(api.inspect_image(image_id)["Id"])


def _import_status(result: Any) -> str:
    """The image id from the import response (one JSON object, or several lines of them)."""
    objects: list[Mapping[str, Any]] = []
    if isinstance(result, Mapping):
        objects = [result]
    elif isinstance(result, str):
        objects = [json.loads(line) for line in result.splitlines() if line.strip()]
    for item in objects:
        if "error" in item:
            raise ImageRecipeError(f"import failed: {item['error']}")
    for item in reversed(objects):
        status = item.get("status")
        if isinstance(status, str) and status.startswith("sha256:"):
            return status
    raise ImageRecipeError(f"import reported no image id: {result!r}"[:300])


def _push_and_remember(api: docker.APIClient, recipe: _Recipe, image_id: str) -> str:
    with _step(f"push {recipe.repository}:{recipe.tag}"):
        pushed = registry.push_image(api, image_id, recipe.repository, recipe.tag)
    return _remember(recipe, pushed.reference, image_id=image_id)


def _remember(recipe: _Recipe, reference: str, *, image_id: str) -> str:
    _write_marker(recipe.key, _Marker(inputs=recipe.inputs, reference=reference, image_id=image_id))
    print(f"[images] {reference}")
    return reference


def _served(recipe: _Recipe, marker: _Marker) -> bool:
    """Whether the marker is of this recipe and the registry still serves it under the tag."""
    if marker.inputs != recipe.inputs:
        return False
    if registry.manifest_digest(recipe.repository, recipe.tag) != marker.digest:
        return False
    print(f"[images] {recipe.repository}:{recipe.tag} cached: {marker.reference}")
    return True


def _reuse(api: docker.APIClient, recipe: _Recipe) -> str | None:
    """The pinned reference if the registry (or at least the daemon) still has this recipe."""
    marker = _read_marker(recipe.key)
    if marker is None or marker.inputs != recipe.inputs:
        return None
    if _served(recipe, marker):
        return marker.reference
    try:
        labels = (api.inspect_image(marker.image_id).get("Config") or {}).get("Labels") or {}
    except docker.errors.ImageNotFound:
        return None
    if labels.get(RECIPE_LABEL) != recipe.inputs:
        return None
    print(f"[images] registry lost {recipe.repository}:{recipe.tag}; pushing the local image again")
    return _push_and_remember(api, recipe, marker.image_id)


def _marker_path(key: str) -> pathlib.Path:
    return MARKER_DIR / f"{key}.json"


def _read_marker(key: str) -> _Marker | None:
    try:
        raw = json.loads(_marker_path(key).read_text())
        return _Marker(inputs=raw["inputs"], reference=raw["reference"], image_id=raw["image_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(key: str, marker: _Marker) -> None:
    MARKER_DIR.mkdir(parents=True, exist_ok=True)
    path = _marker_path(key)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(dataclasses.asdict(marker), indent=2) + "\n")
    partial.replace(path)


def _local_id(api: docker.APIClient, reference: str) -> str:
    """The local image id of a pinned reference, pulling it back if the daemon lost it."""
    _ensure_local(api, reference)
    return str(api.inspect_image(reference)["Id"])


def _ensure_local(api: docker.APIClient, reference: str) -> None:
    try:
        api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        repository, _, digest = reference.partition("@")
        api.pull(repository, tag=digest or None)
