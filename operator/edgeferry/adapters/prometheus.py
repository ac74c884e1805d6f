"""Prometheus' HTTP query API, for rollout analysis: one instant query, one number back.

`GET /api/v1/query?query=...` (the stable API since Prometheus 2.0, also served by Thanos,
Cortex, Mimir and VictoriaMetrics). An analysis metric is one number, so the answer must be a
scalar or a vector of at most one sample; more samples are refused with a hint to aggregate,
since picking one of them would measure an arbitrary series. No sample and NaN are `None`: no
value, which the analysis counts as inconclusive, never as a pass. Credentials (a bearer token
or basic auth) are read from their files at each query, so a rotated Secret is picked up.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import requests

from edgeferry import settings

_NO_PROXY = {"http": "", "https": ""}


class QueryError(RuntimeError):
    """Prometheus could not be reached, refused the query, or answered with no usable number."""


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where Prometheus is and how to authenticate."""

    url: str
    bearer_token_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, config: settings.AnalysisSettings) -> Connection | None:
        """The connection the operator is configured with; None when none is."""
        if config.prometheus_url is None:
            return None
        return cls(
            url=config.prometheus_url,
            bearer_token_file=config.bearer_token_file,
            username=config.username,
            password_file=config.password_file,
            ca_file=config.ca_file,
            timeout_seconds=config.timeout_seconds,
        )


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise QueryError(f"cannot read the Prometheus {what} from {path}: {exc}") from exc


def query(conn: Connection, promql: str) -> float | None:
    """The value of an instant query now; None when it has no sample or is NaN.

    Raises QueryError when Prometheus cannot be reached, refuses the query, or answers with
    more than one series.
    """
    headers = {"Accept": "application/json"}
    auth: tuple[str, str] | None = None
    if conn.bearer_token_file is not None:
        headers["Authorization"] = f"Bearer {_read(conn.bearer_token_file, 'token')}"
    if conn.username is not None and conn.password_file is not None:
        auth = (conn.username, _read(conn.password_file, "password"))
    try:
        response = requests.get(
            f"{conn.url}/api/v1/query",
            params={"query": promql},
            headers=headers,
            auth=auth,
            timeout=conn.timeout_seconds,
            verify=str(conn.ca_file) if conn.ca_file is not None else True,
            proxies=_NO_PROXY if _loopback(conn.url) else None,
        )
    except requests.RequestException as exc:
        raise QueryError(f"Prometheus at {conn.url} did not answer: {exc}") from exc
    try:
        document: dict[str, Any] = response.json()
    except ValueError:
        document = {}
    if response.status_code != 200 or document.get("status") != "success":
        detail = document.get("error") or response.text[:200]
        raise QueryError(f"Prometheus answered {response.status_code}: {detail}")
    return value_of(document.get("data") or {})


def value_of(data: dict[str, Any]) -> float | None:
    """The one number of a query's `data` (scalar or vector); None: no sample or NaN."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        pair = result
    elif kind == "vector":
        samples = result or []
        if not samples:
            return None
        if len(samples) > 1:
            raise QueryError(
                f"the query returned {len(samples)} series; an analysis needs one number "
                "(aggregate it, e.g. with sum() or max())"
            )
        pair = samples[0].get("value")
    else:
        raise QueryError(f"the query returned a {kind}; an analysis needs a scalar or a vector")
    try:
        number = float(pair[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError) as exc:
        raise QueryError(f"Prometheus answered an unreadable sample: {pair!r}") from exc
    return None if math.isnan(number) else number


def _loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in {"localhost", "127.0.0.1", "::1"}
