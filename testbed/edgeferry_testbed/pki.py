"""Keys and credentials of the local clusters, made with the openssl CLI.

One CA signs one serving certificate valid for the testbed's host address (every apiserver binds
there), 127.0.0.1, and each cluster's `kubernetes` Service address (what in-cluster clients
dial). Each cluster gets its own ServiceAccount signing key and admin token, so a credential of
one cluster never works on another, as with real separate sites.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import subprocess
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ServingCerts:
    ca_cert: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_serving_certs(pki_dir: Path, addresses: tuple[str, ...] = ()) -> ServingCerts:
    """The CA and the serving certificate, created once per state directory (and again when
    the addresses it must be valid for change)."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = pki_dir / "ca.key", pki_dir / "ca.crt"
    key, cert = pki_dir / "serving.key", pki_dir / "serving.crt"
    if not ca_cert.exists():
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_cert),
            "-days",
            "3650",
            "-subj",
            "/CN=edgeferry-testbed-ca",
        )
    csr, ext = pki_dir / "serving.csr", pki_dir / "serving.ext"
    ips = "".join(f"IP:{a}," for a in ("127.0.0.1", *addresses))
    wanted_ext = (
        f"subjectAltName={ips}DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    if not cert.exists() or not ext.exists() or ext.read_text() != wanted_ext:
        ext.write_text(wanted_ext)
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=kube-apiserver",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "3650",
            "-extfile",
            str(ext),
        )
    return ServingCerts(ca_cert=ca_cert, cert=cert, key=key)


def ensure_service_account_key(cluster_dir: Path) -> Path:
    """The RSA key that signs (and, public half, verifies) this cluster's ServiceAccount tokens."""
    key = cluster_dir / "sa.key"
    if not key.exists():
        cluster_dir.mkdir(parents=True, exist_ok=True)
        _openssl("genrsa", "-out", str(key), "2048")
    return key


ADMIN_USER = "edgeferry-admin"
"""The user of every cluster's admin token (tests, kwok, controllers, kubelets)."""


def ensure_admin_token(cluster_dir: Path) -> tuple[str, Path]:
    """A random admin token in `system:masters`, and the apiserver's token file holding it."""
    token_file = cluster_dir / "tokens.csv"
    if token_file.exists():
        token = token_file.read_text().split(",", 1)[0]
    else:
        cluster_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(24)
        token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        token_file.chmod(0o600)
    return token, token_file


def write_kubeconfig(path: Path, *, cluster: str, server: str, ca_cert: Path, token: str) -> None:
    """A self-contained kubeconfig (CA data inlined), so it can also go into a Secret as is."""
    ca_data = base64.b64encode(ca_cert.read_bytes()).decode()
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: {cluster}-admin
  user:
    token: {token}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {cluster}-admin
    namespace: default
current-context: {cluster}
"""
    )
    path.chmod(0o600)
