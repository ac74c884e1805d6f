"""Root filesystems the testbed's base images are made of, built on the host without Docker.

A static busybox tree (a tar made in memory) and debootstrapped Debian trees, stripped to what a
model server needs. The Docker and registry side (import, build, push, markers) is in `images`.

Debian's python3-scipy depends on the pythran compiler, which drags in gcc, g++ and Boost headers
(about 500 MB). Those are purged with ``dpkg --force-depends`` after debootstrap: the image
shrinks to about a third, and dpkg's database still says exactly what is installed, so syft and
grype see the truth. The trade-off: apt in a derived image reports the missing dependency, and
``apt-get -f install`` would bring the toolchain back; model images add files, not packages.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
import shutil
import subprocess
import tarfile

BUSYBOX_BINARY = pathlib.Path("/bin/busybox")
APP_UID = 10001

#: Emptied after debootstrap: package indexes, caches, logs and documentation. Under
#: /usr/share/doc the copyright files stay: SBOM tools read licenses from them.
_STRIP = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
    "usr/share/bug",
)
#: Build-time packages that python3-scipy drags in through its dependency on the pythran compiler
#: (a C++ toolchain, Boost headers, BLAS headers): about 500 MB nothing at run time needs.
#: OpenBLAS goes too; the reference BLAS/LAPACK that stay are plenty for small models.
_PRUNE = (
    "python3-pythran",
    "python3-gast",
    "python3-beniget",
    "libboost1.74-dev",
    "libxsimd-dev",
    "g++",
    "g++-12",
    "gcc",
    "gcc-12",
    "cpp",
    "cpp-12",
    "libgcc-12-dev",
    "libstdc++-12-dev",
    "libc6-dev",
    "libc-dev-bin",
    "linux-libc-dev",
    "libcrypt-dev",
    "libnsl-dev",
    "libtirpc-dev",
    "rpcsvc-proto",
    "binutils",
    "binutils-common",
    "binutils-x86-64-linux-gnu",
    "binutils-aarch64-linux-gnu",
    "libbinutils",
    "libctf0",
    "libctf-nobfd0",
    "libgprofng0",
    "libasan8",
    "libtsan2",
    "liblsan0",
    "libubsan1",
    "libcc1-0",
    "libisl23",
    "libmpc3",
    "libmpfr6",
    "libitm1",
    "libpython3.11-dev",
    "libpython3-dev",
    "python3.11-dev",
    "python3-dev",
    "libexpat1-dev",
    "zlib1g-dev",
    "libopenblas-pthread-dev",
    "libopenblas-dev",
    "libopenblas0-pthread",
    "libopenblas0",
    "libblas-dev",
    "liblapack-dev",
    "libjs-jquery",
    "libjs-underscore",
    "libjs-sphinxdoc",
)
#: Test suites shipped inside these packages; never imported by a model server.
_TEST_SUITES = ("sklearn", "scipy", "numpy", "joblib", "threadpoolctl")


class ImageRecipeError(RuntimeError):
    """A base image could not be made (debootstrap, import or push failed); `images` raises
    it too."""


def run(command: list[str], *, what: str) -> None:
    """Run a host command; a failure says which step and ends with its last 20 lines."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise ImageRecipeError(f"{what} failed ({done.returncode}):\n{tail}")


def busybox_version() -> str:
    done = subprocess.run([str(BUSYBOX_BINARY)], capture_output=True, text=True, check=False)
    found = re.search(r"BusyBox v(\d+(?:\.\d+)+)", done.stdout + done.stderr)
    if not found:
        raise ImageRecipeError("cannot read the busybox version")
    return found.group(1)


def busybox_rootfs() -> bytes:
    """A tar of /bin/busybox, a symlink per applet, /etc/passwd with an ``app`` user, /tmp."""
    done = subprocess.run(
        [str(BUSYBOX_BINARY), "--list-full"], capture_output=True, text=True, check=True
    )
    applets = sorted(
        {line.strip() for line in done.stdout.splitlines() if line.strip()} - {"bin/busybox"}
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory, mode in (
            ("bin", 0o755),
            ("sbin", 0o755),
            ("usr", 0o755),
            ("usr/bin", 0o755),
            ("usr/sbin", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("var", 0o755),
            ("var/www", 0o755),
            ("home", 0o755),
        ):
            _add(archive, directory, tarfile.DIRTYPE, mode=mode)
        _add(archive, "home/app", tarfile.DIRTYPE, mode=0o755, owner=APP_UID)
        _add(archive, "bin/busybox", tarfile.REGTYPE, mode=0o755, data=BUSYBOX_BINARY.read_bytes())
        for applet in applets:
            _add(archive, applet, tarfile.SYMTYPE, link="/bin/busybox")
        _add(
            archive,
            "etc/passwd",
            tarfile.REGTYPE,
            data=(
                "root:x:0:0:root:/root:/bin/sh\n"
                f"app:x:{APP_UID}:{APP_UID}:app:/home/app:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            ).encode(),
        )
        _add(
            archive,
            "etc/group",
            tarfile.REGTYPE,
            data=(f"root:x:0:\napp:x:{APP_UID}:\nnogroup:x:65534:\n").encode(),
        )
    return buffer.getvalue()


def _add(
    archive: tarfile.TarFile,
    name: str,
    kind: bytes,
    *,
    mode: int = 0o644,
    data: bytes = b"",
    link: str = "",
    owner: int = 0,
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode if kind != tarfile.SYMTYPE else 0o777
    info.uid = info.gid = owner
    info.mtime = 0
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def prune_packages(rootfs: pathlib.Path) -> None:
    """Purge the build-only packages in `_PRUNE` that debootstrap installed."""
    listed = subprocess.run(
        ["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    installed = {line.split()[0] for line in listed if line.endswith(" installed")}
    present = sorted(installed & set(_PRUNE))
    if present:
        command = ["chroot", str(rootfs), "dpkg", "--purge", "--force-depends", *present]
        run(command, what="dpkg --purge")
    run(
        ["chroot", str(rootfs), "python3", "-c", "import sklearn.linear_model, scipy.optimize"],
        what="sklearn import check after pruning",
    )


def tar_directory(directory: pathlib.Path) -> bytes:
    """The directory as an uncompressed tar with numeric owners, as `docker import` wants."""
    done = subprocess.run(
        [
            "tar",
            "--numeric-owner",
            "--sort=name",
            "--xattrs",
            "-C",
            str(directory),
            "-cf",
            "-",
            ".",
        ],
        capture_output=True,
        check=True,
    )
    return done.stdout


def strip(rootfs: pathlib.Path) -> None:
    for relative in _STRIP:
        _empty(rootfs / relative)
    for directory, subdirectories, files in os.walk(rootfs / "usr/share/doc", topdown=False):
        here = pathlib.Path(directory)
        for name in files:
            if name != "copyright" or (here / name).is_symlink():
                (here / name).unlink()
        for name in subdirectories:
            if (here / name).is_symlink():
                (here / name).unlink()
            elif not any((here / name).iterdir()):
                (here / name).rmdir()
    dist_packages = rootfs / "usr/lib/python3/dist-packages"
    for package in _TEST_SUITES:
        for tests in sorted((dist_packages / package).glob("**/tests"), reverse=True):
            if tests.is_dir():
                shutil.rmtree(tests)
    for cache in rootfs.glob("var/cache/debconf/*-old"):
        cache.unlink()
    _empty(rootfs / "dev")  # the runtime mounts its own /dev


def _empty(directory: pathlib.Path) -> None:
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def add_user(rootfs: pathlib.Path, name: str, uid: int) -> None:
    passwd = rootfs / "etc/passwd"
    if f":{uid}:" not in passwd.read_text():
        with passwd.open("a") as handle:
            handle.write(f"{name}:x:{uid}:{uid}:{name}:/home/{name}:/usr/sbin/nologin\n")
        with (rootfs / "etc/group").open("a") as handle:
            handle.write(f"{name}:x:{uid}:\n")
    home = rootfs / "home" / name
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, uid)


def unmount_below(rootfs: pathlib.Path) -> None:
    """Unmount anything debootstrap left mounted, before the directory is deleted."""
    prefix = str(rootfs.resolve()) + "/"
    mounts = pathlib.Path("/proc/mounts").read_text().splitlines()
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)
