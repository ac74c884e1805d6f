"""API clients for the places models run: the hub itself and remote K3s clusters.

Every EdgeTarget is reached through one `kubernetes` client:

- `Cloud` targets are node pools of the hub, so they use the operator's own credentials
  (in-cluster ServiceAccount, else `KUBECONFIG`).
- `K3s` targets use the kubeconfig stored in a Secret in the EdgeTarget's *own* namespace. The
  namespace is not a parameter anywhere in this module: it is always the EdgeTarget's, so a user
  can never make the operator read a Secret they could not read themselves.

A kubeconfig from a Secret is user input that the operator executes, so only inline credentials
are accepted (`token`, `client-certificate-data`/`client-key-data`, `certificate-authority-data`).
`exec` and `auth-provider` plugins would run a command on the operator's host, and file paths would
read the operator's own files; both are refused with a message that says what to put instead.
`insecure-skip-tls-verify: true` is refused too (reason `InsecureTLSRefused`) unless the operator
is started with `EDGEFERRY_ALLOW_INSECURE_TARGET_TLS=true`: without verification, whoever can
answer at the server's address receives the kubeconfig's credentials and decides what the
operator believes about the site. `proxy-url` is accepted for HTTP(S) proxies: it reaches no
place that `server` could not already name, and with TLS verified the proxy only sees a tunnel.
SOCKS proxies are refused (the client would need a library the operator does not ship).

A dead site must cost a bounded time, never a whole reconcile: every client here has urllib3
retries switched off (one attempt, so a timeout is a timeout, not four), and callers pass
`timeout` to each request. `Runner` adds the other half: blocking client calls run on a bounded
thread pool with a deadline, so an `await` on one target returns in time even if its socket hangs.

Clients are cached per (EdgeTarget, Secret resourceVersion): a rotated kubeconfig is picked up
within `secret_ttl_seconds`, and an unchanged one costs one small GET per TTL, not a new TLS pool
per reconcile.

Longer than our ~400-line guide on purpose: the kubeconfig checks, the client cache and the
bounded runner are one trust boundary (what a user's Secret can make the operator do, and how
long a dead site can hold it), reviewed together.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import http
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import urllib3.exceptions
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

from edgeferry.models import edgetarget as et
from edgeferry.models import reasons

T = TypeVar("T")

_ALLOWED_USER_KEYS = frozenset(
    {"token", "client-certificate-data", "client-key-data", "username", "password"}
)
_ALLOWED_CLUSTER_KEYS = frozenset(
    {
        "server",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "proxy-url",
        "disable-compression",
        "extensions",
    }
)


# --- errors --------------------------------------------------------------------------------------
class TargetAccessError(Exception):
    """A target could not be used; `reason` is CamelCase for conditions, the message says why."""

    reason = reasons.TARGET_ERROR

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


class Unreachable(TargetAccessError):  # noqa: N818 (a state, like `TimeoutError`)
    """The target's API server did not answer in time, refused the connection, or failed (5xx).

    Transient by nature: the site may come back on its own.
    """

    reason = reasons.UNREACHABLE


class CredentialsError(TargetAccessError):
    """The Secret, its kubeconfig or the credentials in it are missing, invalid or refused.

    Needs a person: nothing changes until the Secret (or the remote RBAC) is fixed.
    """

    reason = reasons.CREDENTIALS_INVALID


def classify(exc: BaseException, *, target: str, server: str | None = None) -> TargetAccessError:
    """Turn what a client call raised into an Unreachable or CredentialsError with a message."""
    if isinstance(exc, TargetAccessError):
        return exc
    where = f" at {server}" if server else ""
    if isinstance(exc, k8s_exceptions.ApiException):
        status = exc.status or 0
        if status == http.HTTPStatus.UNAUTHORIZED:
            return CredentialsError(
                f"{target}: the API server{where} refused the credentials ({status} "
                f"{exc.reason}); put a valid token or client certificate in the kubeconfig",
                reason=reasons.UNAUTHORIZED,
            )
        if status == http.HTTPStatus.FORBIDDEN:
            return CredentialsError(
                f"{target}: forbidden: {_denied(exc)}; grant it (K3s: manifests/edge/; "
                "Cloud: manifests/workload-access/)",
                reason=reasons.FORBIDDEN,
            )
        if status >= http.HTTPStatus.INTERNAL_SERVER_ERROR or status == 0:
            return Unreachable(f"{target}: the API server{where} failed ({status} {exc.reason})")
        return TargetAccessError(
            f"{target}: the API server{where} answered {status} {exc.reason}",
            reason=reasons.REQUEST_REJECTED,
        )
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return classify(exc.reason, target=target, server=server)
    if isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError):
        return CredentialsError(
            f"{target}: TLS with the API server{where} failed ({exc}); check "
            "certificate-authority-data in the kubeconfig",
            reason=reasons.TLS_ERROR,
        )
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionError):
        # Checked before timeouts: urllib3's NewConnectionError subclasses its timeout error.
        detail = str(exc).split(": ", 1)[-1][:200]
        return Unreachable(f"{target}: cannot connect to the API server{where} ({detail})")
    if isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError | socket.timeout):
        return Unreachable(f"{target}: the API server{where} did not answer in time")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        detail = str(exc).split(": ", 1)[-1][:200]
        return Unreachable(f"{target}: cannot connect to the API server{where} ({detail})")
    return TargetAccessError(f"{target}: {type(exc).__name__}: {exc}"[:500])


_DENIAL = re.compile(
    r'User "(?P<user>[^"]+)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)" in API group '
    r'"(?P<group>[^"]*)"(?: in the namespace "(?P<namespace>[^"]+)"| at the cluster scope)?'
)


def _denied(exc: k8s_exceptions.ApiException) -> str:
    """What a 403 refused, from the API server's answer: the user, verb, resource and namespace,
    which is exactly the rule to add. Short, because status fields are cut (to ~250 characters)."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    if not message:
        return f"{exc.status} {exc.reason}"
    found = _DENIAL.search(str(message))
    if found is None:
        return str(message)[:200]
    resource = found["resource"] + (f".{found['group']}" if found["group"] else "")
    where = f"in namespace {found['namespace']}" if found["namespace"] else "cluster-wide"
    return f"{found['user']} may not {found['verb']} {resource} {where}"


# --- building clients ----------------------------------------------------------------------------
POOL_SIZE = 40
"""Connections each client keeps to its API server: as many as the target threads can use at
once (`max_parallel_targets * 2 + 2`, 34 by default). The client's default (5 per CPU) made a
busy round on a small machine discard a connection after nearly every request and open a new
TLS connection for the next (seen as "Connection pool is full" with 200 targets)."""


def _configuration() -> k8s_client.Configuration:
    """A fresh client configuration with urllib3 retries off: one attempt per request."""
    cfg = k8s_client.Configuration()
    cfg.retries = 0
    cfg.connection_pool_maxsize = POOL_SIZE
    return cfg


def hub_client() -> k8s_client.ApiClient:
    """A new client with the operator's own credentials (in-cluster, else `KUBECONFIG`)."""
    cfg = _configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        k8s_config.load_incluster_config(client_configuration=cfg)
    else:
        k8s_config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None,
            client_configuration=cfg,
            persist_config=False,
        )
    return k8s_client.ApiClient(configuration=cfg)


def check_kubeconfig(
    document: Mapping[str, Any], *, source: str, allow_insecure_tls: bool = False
) -> None:
    """Refuse kubeconfigs that would run commands or read files on the operator's host, skip
    TLS verification (unless `allow_insecure_tls`), or use a proxy the client cannot speak."""
    for entry in document.get("users") or []:
        user = (entry or {}).get("user") or {}
        refused = sorted(set(user) - _ALLOWED_USER_KEYS)
        if refused:
            raise CredentialsError(
                f"kubeconfig in {source} uses {', '.join(refused)} for user "
                f"{entry.get('name')!r}; edgeferry only accepts inline credentials (token, or "
                "client-certificate-data and client-key-data): exec and auth-provider plugins "
                "would run commands, and file paths would read files, on the operator's host",
                reason=reasons.KUBECONFIG_REFUSED,
            )
    for entry in document.get("clusters") or []:
        cluster = (entry or {}).get("cluster") or {}
        refused = sorted(set(cluster) - _ALLOWED_CLUSTER_KEYS)
        if refused:
            raise CredentialsError(
                f"kubeconfig in {source} uses {', '.join(refused)} for cluster "
                f"{entry.get('name')!r}; put the CA inline as certificate-authority-data "
                "(`kubectl config view --raw --flatten` writes such a file)",
                reason=reasons.KUBECONFIG_REFUSED,
            )
        _check_tls_and_proxy(
            cluster, name=entry.get("name"), source=source, allow_insecure_tls=allow_insecure_tls
        )


def _check_tls_and_proxy(
    cluster: Mapping[str, Any], *, name: object, source: str, allow_insecure_tls: bool
) -> None:
    skip = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(skip, bool):
        # The client reads any non-empty string, "false" included, as "skip verification".
        raise CredentialsError(
            f"kubeconfig in {source} sets insecure-skip-tls-verify to {skip!r} for cluster "
            f"{name!r}; it must be a YAML boolean (true or false), or left out",
            reason=reasons.KUBECONFIG_INVALID,
        )
    if skip and not allow_insecure_tls:
        raise CredentialsError(
            f"kubeconfig in {source} sets insecure-skip-tls-verify for cluster {name!r}; "
            "edgeferry verifies target API servers: put the server's CA inline as "
            "certificate-authority-data and remove insecure-skip-tls-verify (or, for a lab "
            "only, start the operator with EDGEFERRY_ALLOW_INSECURE_TARGET_TLS=true, Helm "
            "targets.allowInsecureSkipTLSVerify)",
            reason=reasons.INSECURE_TLS_REFUSED,
        )
    proxy = cluster.get("proxy-url")
    if proxy is not None and not str(proxy).lower().startswith(("http://", "https://")):
        raise CredentialsError(
            f"kubeconfig in {source} sets proxy-url {str(proxy)[:100]!r} for cluster {name!r}; "
            "edgeferry reaches targets through HTTP(S) proxies only (http:// or https://)",
            reason=reasons.KUBECONFIG_REFUSED,
        )


def client_from_kubeconfig(
    text: str, *, source: str, allow_insecure_tls: bool = False
) -> k8s_client.ApiClient:
    """A client for the cluster a kubeconfig (YAML text) describes, after `check_kubeconfig`."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CredentialsError(
            f"{source} does not hold a YAML kubeconfig ({exc.__class__.__name__})",
            reason=reasons.KUBECONFIG_INVALID,
        ) from exc
    if not isinstance(document, dict) or not document.get("clusters"):
        raise CredentialsError(
            f"{source} does not hold a kubeconfig (no clusters); create it with "
            "`kubectl create secret generic <name> --from-file=kubeconfig=<file>`",
            reason=reasons.KUBECONFIG_INVALID,
        )
    check_kubeconfig(document, source=source, allow_insecure_tls=allow_insecure_tls)
    cfg = _configuration()
    try:
        return k8s_config.new_client_from_config_dict(
            document, persist_config=False, client_configuration=cfg
        )
    except (k8s_config.ConfigException, ValueError, TypeError, KeyError) as exc:
        raise CredentialsError(
            f"kubeconfig in {source} is not usable: {exc}", reason=reasons.KUBECONFIG_INVALID
        ) from exc


def server_of(api: k8s_client.ApiClient) -> str:
    """The API server URL a client talks to, for messages."""
    return str(api.configuration.host)


# --- the cache -----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Cached:
    client: k8s_client.ApiClient
    resource_version: str
    checked_at: float


class Clients:
    """Clients per EdgeTarget: the hub's for Cloud, the Secret's kubeconfig for K3s.

    Thread-safe; `for_target` blocks (it may read the Secret), so call it through `Runner`.
    """

    def __init__(
        self,
        *,
        hub: k8s_client.ApiClient,
        timeout: float,
        secret_ttl_seconds: float = 30.0,
        allow_insecure_tls: bool = False,
    ) -> None:
        self.hub = hub
        self.timeout = timeout
        self.allow_insecure_tls = allow_insecure_tls
        """Accept `insecure-skip-tls-verify: true` (`EDGEFERRY_ALLOW_INSECURE_TARGET_TLS`)."""
        self.secret_ttl_seconds = secret_ttl_seconds
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._lock = threading.Lock()

    def for_target(
        self, namespace: str, name: str, spec: et.EdgeTargetSpec, *, keep_cached: bool = False
    ) -> k8s_client.ApiClient:
        """The client for EdgeTarget `namespace/name`; raises CredentialsError or Unreachable.

        `keep_cached`: when the Secret can no longer be read (deleted together with the
        EdgeTarget, or access withdrawn with its namespace), use the last client built from it;
        cleanup at a deleted target needs credentials that may already be gone.
        """
        if spec.type == "Agent":
            raise CredentialsError(
                "an Agent target is never contacted by the operator: its agent pulls from the hub",
                reason=reasons.KUBECONFIG_REFUSED,
            )
        if spec.type == "Cloud" or spec.k3s is None:
            return self.hub
        ref = spec.k3s.kubeconfig_secret_ref
        key = (namespace, name)
        with self._lock:
            cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached.checked_at < self.secret_ttl_seconds:
            return cached.client
        try:
            secret = self._read_secret(namespace, ref.name)
        except CredentialsError as exc:
            gone = exc.reason in {reasons.SECRET_NOT_FOUND, reasons.SECRET_FORBIDDEN}
            if keep_cached and gone and cached is not None:
                return cached.client
            raise
        version = str(secret.get("metadata", {}).get("resourceVersion", ""))
        if cached is not None and cached.resource_version == version:
            cached.checked_at = now
            return cached.client
        source = f"Secret {namespace}/{ref.name} key {ref.key!r}"
        raw = (secret.get("data") or {}).get(ref.key)
        if raw is None:
            keys = ", ".join(sorted(secret.get("data") or {})) or "none"
            raise CredentialsError(
                f"Secret {namespace}/{ref.name} has no key {ref.key!r} (keys: {keys}); set "
                "k3s.kubeconfigSecretRef.key, or store the kubeconfig under that key",
                reason=reasons.KUBECONFIG_MISSING,
            )
        try:
            text = base64.b64decode(raw).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise CredentialsError(
                f"{source} is not a UTF-8 kubeconfig", reason=reasons.KUBECONFIG_INVALID
            ) from exc
        fresh = client_from_kubeconfig(
            text, source=source, allow_insecure_tls=self.allow_insecure_tls
        )
        with self._lock:
            old = self._cache.get(key)
            self._cache[key] = _Cached(fresh, version, now)
        if old is not None and old.client is not fresh:
            old.client.close()
        return fresh

    def forget(self, namespace: str, name: str) -> None:
        """Drop the cached client of a deleted (or re-typed) EdgeTarget."""
        with self._lock:
            old = self._cache.pop((namespace, name), None)
        if old is not None:
            old.client.close()

    def _read_secret(self, namespace: str, name: str) -> dict[str, Any]:
        """The Secret as a dict, from the EdgeTarget's own namespace (the only one we read)."""
        core = k8s_client.CoreV1Api(self.hub)
        try:
            response = core.read_namespaced_secret(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except k8s_exceptions.ApiException as exc:
            if exc.status == http.HTTPStatus.NOT_FOUND:
                raise CredentialsError(
                    f"Secret {namespace}/{name} (k3s.kubeconfigSecretRef) does not exist; create "
                    f"it in this namespace: `kubectl -n {namespace} create secret generic "
                    f"{name} --from-file=kubeconfig=<file>`",
                    reason=reasons.SECRET_NOT_FOUND,
                ) from exc
            if exc.status == http.HTTPStatus.FORBIDDEN:
                raise CredentialsError(
                    f"the operator may not read Secret {namespace}/{name}; grant its "
                    "ServiceAccount get on secrets in this namespace",
                    reason=reasons.SECRET_FORBIDDEN,
                ) from exc
            raise
        return dict(json.loads(response.data) or {})


# --- running blocking calls ----------------------------------------------------------------------
class Runner:
    """Blocking client calls on a bounded thread pool, each awaited with a deadline.

    The deadline is the caller's promise to the event loop; the thread itself ends when its
    request times out (each request carries its own timeout), so threads never pile up beyond
    `max_workers`.
    """

    def __init__(self, *, max_workers: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, max_workers), thread_name_prefix="edgeferry-targets"
        )

    async def run(self, fn: Callable[[], T], *, deadline: float) -> T:
        """Run `fn` in a worker thread; raise Unreachable-worthy TimeoutError after `deadline`."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, fn)
        return await asyncio.wait_for(future, timeout=deadline)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass
class Access:
    """What handlers need to talk to targets: the clients, the runner and the timeout."""

    clients: Clients
    runner: Runner
    timeout: float
    """Per-request timeout towards a target (`settings.rollout.target_timeout_seconds`)."""

    @property
    def hub(self) -> k8s_client.ApiClient:
        return self.clients.hub

    @property
    def deadline(self) -> float:
        """How long one operation (a few requests) at one target may take in total."""
        return self.timeout * 3


_SHARED: dict[tuple[float, int, bool], Access] = {}
_SHARED_LOCK = threading.Lock()


def shared(*, timeout: float, max_parallel: int, allow_insecure_tls: bool = False) -> Access:
    """The process-wide Access for these settings (one hub client, one thread pool)."""
    key = (timeout, max_parallel, allow_insecure_tls)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is None:
            found = Access(
                clients=Clients(
                    hub=hub_client(), timeout=timeout, allow_insecure_tls=allow_insecure_tls
                ),
                runner=Runner(max_workers=max_parallel * 2 + 2),
                timeout=timeout,
            )
            _SHARED[key] = found
        return found
