"""A node's own Docker socket for the chart's `hostSocket` build backend: a dockerd of its own.

`build.backend=hostSocket` mounts a Docker socket of the node into the operator Pod. The real
nodes are processes on this host, so "the node's socket" is a socket on this host. Not the main
dockerd's (`/var/run/docker.sock`): it treats only loopback registries as plain HTTP, and the Pod
names the registry by the host address (`10.255.0.1:5000`; its own 127.0.0.1 is the Pod's), so
pulls of the base images and pushes would fail over TLS; and its flags are not the testbed's to
change (it may be reused, not started, by `up`). So `ensure` starts a second dockerd, owned by
the testbed's supervisor (`down` stops it by pid, after everything that uses it):

- its own socket (`.testbed/run/host-socket/docker.sock`, group `docker`, mode 0660 as dockerd
  makes it, so the operator's non-root user needs that GID, the chart's
  `build.hostSocket.socketGroup`), data root, exec root (so its own managed containerd), pidfile,
  cgroup parent and containerd namespaces, and an empty config file (no /etc/docker/daemon.json);
- `--insecure-registry` for the Pods' registry, as a build node's daemon.json would list it;
- `--bridge=ef-hostsock --iptables=false`: a bridge of its own (made here, never `docker0`:
  dockerd started with `--bridge=none` deletes the host's `docker0`, which broke every build of
  the main daemon after it), no iptables rules beside the main dockerd's and kube-proxy's, so its
  containers reach nothing beyond that bridge, which the smoke test needs no more than that (its
  probe joins the tested container's network namespace).

The data root stays across `down`, like the real nodes' containerd roots, so a second run pulls
the base images warm; delete `.testbed/host-socket-docker` for a cold one.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import shutil
import subprocess
from pathlib import Path

from edgeferry_testbed import env, layout, procs, services
from edgeferry_testbed import testbed as testbed_module

NAME = "dockerd-host-socket"
"""Its supervisor name: `down` stops `dockerd-*` last, after the kubelets and the operator."""
BRIDGE = "ef-hostsock"
"""Its containers' bridge, with `BRIDGE_ADDRESS`; removed by `stop`."""
BRIDGE_ADDRESS = "10.219.0.1/24"
GROUP = "docker"
"""The group dockerd gives its socket (and the GID the chart's socketGroup must name)."""


@dataclasses.dataclass(frozen=True)
class HostSocket:
    """The daemon as the chart's values and the tests need it."""

    path: Path
    """The socket on the node (`build.hostSocket.path`)."""
    group: int
    """The GID owning it (`build.hostSocket.socketGroup`), read from the socket itself."""

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"


def socket_path(lay: layout.Layout) -> Path:
    return lay.state_dir / "run" / "host-socket" / "docker.sock"


def argv(lay: layout.Layout, described: env.TestbedEnv, dockerd: str) -> list[str]:
    """dockerd's command line: nothing shared with the main daemon but the kernel."""
    run = socket_path(lay).parent
    return [
        dockerd,
        f"--host=unix://{socket_path(lay)}",
        f"--group={GROUP}",
        f"--config-file={run / 'daemon.json'}",
        f"--pidfile={run / 'dockerd.pid'}",
        f"--exec-root={run / 'exec'}",
        f"--data-root={lay.state_dir / 'host-socket-docker'}",
        "--cgroup-parent=/edgeferry-host-socket",
        "--containerd-namespace=edgeferry-host-socket",
        "--containerd-plugins-namespace=edgeferry-host-socket-plugins",
        f"--bridge={BRIDGE}",
        "--iptables=false",
        "--ip-masq=false",
        f"--insecure-registry={described.pod_registry}",
        "--shutdown-timeout=5",
    ]


def ensure(bed: testbed_module.Testbed, described: env.TestbedEnv) -> HostSocket:
    """The daemon, started when it is not running (a running one is this checkout's own: the
    supervisor's records live in this checkout's state directory)."""
    lay = bed.layout
    path = socket_path(lay)
    if bed.sup.find(NAME) is None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise procs.TestbedError("dockerd is not installed: `apt-get install docker.io`")
        try:
            grp.getgrnam(GROUP)
        except KeyError as e:
            raise procs.TestbedError(
                f"no group {GROUP!r} for the host-socket daemon's socket (`groupadd {GROUP}`)"
            ) from e
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "daemon.json").write_text("{}\n")
        # A unix socket's path is at most 107 bytes, and containerd's sits deeper than ours.
        inner = path.parent / "exec" / "containerd" / "containerd.sock"
        if len(os.fsencode(inner)) > 107:
            raise procs.TestbedError(
                f"{inner} is too long for a unix socket: set a shorter EDGEFERRY_TESTBED_DIR"
            )
        path.unlink(missing_ok=True)
        _bridge_up()
        bed.sup.start(NAME, argv(lay, described, dockerd))
    procs.wait_until(
        lambda: services.docker_answers(f"unix://{path}"),
        timeout=60,
        what=f"the host-socket dockerd to answer on {path}",
        on_timeout=lambda: bed.sup.log_tail(NAME),
    )
    return HostSocket(path=path, group=path.stat().st_gid)


def stop(bed: testbed_module.Testbed) -> bool:
    """Stop the daemon (its containers with it) and remove its bridge; True if it ran."""
    ran = bed.sup.stop(NAME, grace=20.0)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    return ran


def _bridge_up() -> None:
    """The daemon's own bridge (dockerd uses an existing one named by `--bridge`)."""
    shown = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False)
    if shown.returncode != 0:
        for command in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE],
        ):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise procs.TestbedError(f"{' '.join(command)}: {done.stderr.strip()}")
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], capture_output=True, check=False)
