"""Watches at target clusters: our Deployments and Pods in one EdgeTarget's namespace.

Push mode used to learn about a Pod at a remote site only by looking, every resync, at every
target of every ModelDeployment. A watch per EdgeTarget instead holds two long requests open
(Deployments and Pods carrying `app.kubernetes.io/managed-by=edgeferry`, in the EdgeTarget's
namespace there) and calls back on each change, so a settled fleet costs the keep-alives of its
watches and a Pod becoming ready at a site is heard within about a second.

How a watch stays correct, and why:

- **Start from a list's resourceVersion** (one `limit=1` list, no objects kept): a watch started
  without one would replay every object as ADDED.
- **Bookmarks** (`allowWatchBookmarks`) keep the resourceVersion current while nothing of ours
  changes, so a reconnect resumes where it stopped instead of running into 410 Gone.
- **Reconnect** after a dropped connection or a dead API server, with backoff, from the last
  resourceVersion; the server's own watch timeout (a few minutes, spread) renews it quietly.
  Every reconnect after a failure and every relist (410 Gone: the resourceVersion is too old)
  calls `resync`: events may have been missed, so what watches the target looks again.
- **Credentials** come from `clusters.Clients` at each connect (a rotated kubeconfig is used
  from the next reconnect on); each watch has its own aiohttp session with the client's TLS
  and token, all in the operator's event loop: a thousand watches are a thousand idle sockets,
  not a thousand threads.
- **Stopping** cancels the tasks and closes the sessions (`Watches.close`, at operator stop).

This module only follows and reports; what an event means (whom to wake, whether a cached
reading stands) is `decisions.target_watch`'s, wired by the ModelDeployment handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from kubernetes import client as k8s_client

from edgeferry.models import target_objects

_LOG = logging.getLogger("edgeferry.target_watch")

SELECTOR = f"{target_objects.MANAGED_BY_LABEL}={target_objects.MANAGED_BY}"
"""Every Deployment and Pod edgeferry renders carries it (`decisions.workload`)."""
RESOURCES = {"deployments": "/apis/apps/v1", "pods": "/api/v1"}
"""What a watch follows at a target, with each resource's API path."""
_SERVER_TIMEOUT = (240, 360)
"""The range of the watch's `timeoutSeconds` (spread, so a fleet does not renew at once)."""
_READ_BUFFER = 4 * 1024 * 1024
"""A watch event is one JSON line holding a whole object; Pods can be large."""


class Listener(Protocol):
    """What a watch reports to (the ModelDeployment handler)."""

    def changed(self, key: Any, owner: str | None) -> None:
        """An object of ours changed at the watched place; `owner` is its owner label."""

    def resync(self, key: Any) -> None:
        """Events may have been missed (reconnect after a failure, relist): look again."""

    def connection(self, key: Any, resource: str, *, up: bool, reason: str | None) -> None:
        """A watch of `resource` is open (`up`) or lost (`reason`: why)."""


Connect = Callable[[], Awaitable[k8s_client.ApiClient]]
"""Gives the client for the watched target (may read its Secret), each time it connects."""


class Gone(Exception):  # noqa: N818 (the HTTP status's name)
    """410: the resourceVersion is too old to resume from; relist."""


@dataclasses.dataclass
class _Place:
    namespace: str
    connect: Connect
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    up: set[str] = dataclasses.field(default_factory=set)
    session: aiohttp.ClientSession | None = None
    session_of: int | None = None
    """id() of the client configuration the session was made for."""
    request_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The kubeconfig's `proxy-url` and `tls-server-name`, for each request."""


def _ssl_context(cfg: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if getattr(cfg, "ca_cert_data", None):
        context.load_verify_locations(cadata=cfg.ca_cert_data)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return context


def _headers(cfg: k8s_client.Configuration) -> dict[str, str]:
    """The client's own auth headers (`auth_settings` also refreshes an expiring token)."""
    headers = {
        str(setting["key"]): str(setting["value"])
        for setting in cfg.auth_settings().values()
        if setting.get("in") == "header" and setting.get("value")
    }
    if not headers and cfg.username:
        headers["authorization"] = str(cfg.get_basic_auth_token())
    return headers


class Watches:
    """The open watches, by a key of the caller's choosing (one per watched place)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._places: dict[Any, _Place] = {}

    def keys(self) -> list[Any]:
        return list(self._places)

    def is_up(self, key: Any) -> bool:
        """Both watches of `key` are open (so no change there goes unheard)."""
        place = self._places.get(key)
        return place is not None and place.up == set(RESOURCES)

    def start(self, key: Any, *, namespace: str, connect: Connect) -> None:
        """Follow our Deployments and Pods in `namespace` of the cluster `connect` reaches."""
        if key in self._places:
            return
        place = _Place(namespace=namespace, connect=connect)
        self._places[key] = place
        for resource in RESOURCES:
            place.tasks.append(
                asyncio.create_task(self._follow(key, place, resource), name=f"watch {key}")
            )

    async def stop(self, key: Any) -> None:
        place = self._places.pop(key, None)
        if place is not None:
            await self._end(key, place)

    async def close(self) -> None:
        """Stop every watch: cancel the tasks and close the sessions."""
        places, self._places = self._places, {}
        await asyncio.gather(*(self._end(k, p) for k, p in places.items()))

    async def _end(self, key: Any, place: _Place) -> None:
        for task in place.tasks:
            task.cancel()
        for task in place.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for resource in sorted(place.up):
            self._listener.connection(key, resource, up=False, reason=None)
        place.up.clear()
        if place.session is not None:
            await place.session.close()

    async def _session(self, place: _Place) -> tuple[aiohttp.ClientSession, str]:
        api = await place.connect()
        cfg = api.configuration
        if place.session is None or place.session_of != id(cfg) or place.session.closed:
            if place.session is not None:
                await place.session.close()
            place.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ssl_context(cfg)),
                headers=_headers(cfg),
                read_bufsize=_READ_BUFFER,
            )
            place.session_of = id(cfg)
            place.request_options = {}
            if cfg.proxy:
                place.request_options["proxy"] = cfg.proxy
            if getattr(cfg, "tls_server_name", None):
                place.request_options["server_hostname"] = cfg.tls_server_name
        return place.session, str(cfg.host).rstrip("/")

    async def _follow(self, key: Any, place: _Place, resource: str) -> None:
        """Keep one watch open until cancelled."""
        state = _State()
        while True:
            try:
                session, host = await self._session(place)
                url = f"{host}{RESOURCES[resource]}/namespaces/{place.namespace}/{resource}"
                if state.version is None:
                    state.version = await _list_version(session, url, place.request_options)
                await self._stream(key, place, resource, session, url, state)
            except asyncio.CancelledError:
                raise
            except Gone:
                state.version, state.gap = None, True
                self._lost(key, place, resource, "gone")
                continue
            except Exception as exc:
                state.failures += 1
                state.gap = True
                self._lost(key, place, resource, "error")
                _LOG.info("watch of %s at %s lost: %s: %s", resource, key, type(exc).__name__, exc)
            await asyncio.sleep(_backoff(state.failures))

    def _lost(self, key: Any, place: _Place, resource: str, reason: str) -> None:
        """An open watch failed (reported once, not at every retry while its server is down)."""
        if resource not in place.up:
            return
        place.up.discard(resource)
        self._listener.connection(key, resource, up=False, reason=reason)
        self._listener.resync(key)

    async def _stream(
        self,
        key: Any,
        place: _Place,
        resource: str,
        session: aiohttp.ClientSession,
        url: str,
        state: _State,
    ) -> None:
        """One watch request, until the server ends it; keeps `state.version` current."""
        timeout = random.randint(*_SERVER_TIMEOUT)  # spread, so a fleet does not renew at once
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "labelSelector": SELECTOR,
            "resourceVersion": str(state.version),
            "timeoutSeconds": str(timeout),
        }
        wait = aiohttp.ClientTimeout(
            total=None, connect=10, sock_connect=10, sock_read=timeout + 30
        )
        options = place.request_options
        async with session.get(url, params=params, timeout=wait, **options) as response:
            if response.status == 410:
                raise Gone()
            response.raise_for_status()
            if resource not in place.up:
                place.up.add(resource)
                self._listener.connection(key, resource, up=True, reason=None)
            if state.gap:  # reconnected after a failure or a relist: events may be missed
                self._listener.resync(key)
            state.gap, state.failures = False, 0
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                state.version = str(obj.get("metadata", {}).get("resourceVersion") or state.version)
                if event.get("type") == "BOOKMARK":
                    continue
                labels = obj.get("metadata", {}).get("labels") or {}
                self._listener.changed(key, labels.get(target_objects.DEPLOYMENT_LABEL))


@dataclasses.dataclass
class _State:
    """One watch's position: where to resume, and whether events may have been missed."""

    version: str | None = None
    gap: bool = False
    failures: int = 0


async def _list_version(session: aiohttp.ClientSession, url: str, options: dict[str, Any]) -> str:
    """The collection's current resourceVersion (a one-item list; no objects are kept)."""
    params = {"labelSelector": SELECTOR, "limit": "1"}
    wait = aiohttp.ClientTimeout(total=30)
    async with session.get(url, params=params, timeout=wait, **options) as response:
        response.raise_for_status()
        body = await response.json()
    return str(body["metadata"]["resourceVersion"])


def _backoff(failures: int) -> float:
    if failures <= 0:
        return 0.0
    return float(min(30.0, 2 ** (failures - 1)))
