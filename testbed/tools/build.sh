#!/usr/bin/env bash
# Builds the Go tools the testbed needs (Kubernetes control plane, kubectl, etcd, kwok, grype,
# helm, oras) from pinned Go modules, once, into a cache outside the git tree. A tool whose binary is
# already cached for its pinned version is skipped, so a warm run costs a few stat calls.
#
# Usage: testbed/tools/build.sh [tool ...]     (default: all)
# Cache: ${EDGEFERRY_CACHE:-$HOME/.cache/edgeferry}/bin/<tool>-<version>/
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${EDGEFERRY_CACHE:-$HOME/.cache/edgeferry}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

mod_version() { # module path, wrapper dir -> pinned version from the wrapper's go.mod
  awk -v m="$1" '$1 == "require" && $2 == m {print $3} $1 == m {print $2}' "$here/gomod/$2/go.mod" | head -n1
}

timed() { # label, command...
  local label=$1 start=$SECONDS; shift
  echo "build: $label ..."
  if "$@"; then
    echo "build: $label done in $((SECONDS - start)) s"
  else
    echo "build: $label FAILED after $((SECONDS - start)) s" >&2
    return 1
  fi
}

build_into() { # wrapper dir, out dir, ldflags, packages...
  local dir=$1 out=$2 ldflags=$3; shift 3
  local tmp="$out.partial"
  rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$here/gomod/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "$@")
  rm -rf "$out"; mv "$tmp" "$out"
}

kubernetes() {
  local v; v=$(mod_version k8s.io/kubernetes kubernetes)
  local out="$cache/bin/kubernetes-$v"
  [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && [ -x "$out/kubelet" ] && [ -x "$out/kube-proxy" ] && return 0
  local minor=${v#v1.}; minor=${minor%%.*}
  local ld="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=edgeferry-testbed"
    ld+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # kubelet and kube-proxy run the testbed's real nodes; one `go build` shares the packages.
  timed "kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy)" \
    build_into kubernetes "$out" "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

etcd() {
  local v; v=$(mod_version go.etcd.io/etcd/server/v3 etcd)
  local out="$cache/bin/etcd-$v"
  [ -x "$out/etcd" ] && return 0
  timed "etcd $v" build_into etcd "$out" "" go.etcd.io/etcd/server/v3
  mv "$out/server" "$out/etcd"
}

kwok() {
  local v; v=$(mod_version sigs.k8s.io/kwok kwok)
  local out="$cache/bin/kwok-$v"
  [ -x "$out/kwok" ] && [ -d "$out/stages" ] && return 0
  timed "kwok $v" build_into kwok "$out" "-X sigs.k8s.io/kwok/pkg/consts.Version=$v" sigs.k8s.io/kwok/cmd/kwok
  # Standalone kwok ships no stages: keep the module's stage YAMLs beside the binary.
  local src; src=$(cd "$here/gomod/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  mkdir -p "$out/stages"
  cp -r "$src/kustomize/stage/." "$out/stages/"
  chmod -R u+w "$out/stages"
}

grype() {
  # grype and edgeferry-vulndb (our offline DB builder, gomod/grype/cmd/edgeferry-vulndb) link the
  # same grype release: one `go build` compiles the shared packages once, and the DB the builder
  # writes always has the schema this grype reads.
  # The builder is our source, not a pinned release: its source digest is part of the cache key.
  local v; v=$(mod_version github.com/anchore/grype grype)
  local out="$cache/bin/grype-$v"
  local src; src=$(cd "$here/gomod/grype" && ls cmd/edgeferry-vulndb/*.go | grep -v '_test\.go$' | xargs cat go.mod go.sum | sha256sum | cut -c1-16)
  [ -x "$out/grype" ] && [ -x "$out/edgeferry-vulndb" ] && [ "$(cat "$out/.source" 2>/dev/null)" = "$src" ] && return 0
  timed "grype $v + edgeferry-vulndb" build_into grype "$out" "-X main.version=${v#v}" \
    github.com/anchore/grype/cmd/grype ./cmd/edgeferry-vulndb
  echo "$src" > "$out/.source"
}

helm() {
  local v; v=$(mod_version helm.sh/helm/v3 helm)
  local out="$cache/bin/helm-$v"
  [ -x "$out/helm" ] && return 0
  timed "helm $v" build_into helm "$out" "-X helm.sh/helm/v3/internal/version.version=$v" helm.sh/helm/v3/cmd/helm
}

oras() {
  # The ORAS CLI, only to check that the model artifacts `python -m edgeferry model push` makes
  # are what `oras pull` reads (tests/integration/test_model_sources.py).
  local v; v=$(mod_version oras.land/oras oras)
  local out="$cache/bin/oras-$v"
  [ -x "$out/oras" ] && return 0
  timed "oras $v" build_into oras "$out" "-X oras.land/oras/internal/version.Version=${v#v}" oras.land/oras/cmd/oras
}

prometheus_operator_crds() {
  # Only data: the ServiceMonitor and PrometheusRule CRDs of a pinned Prometheus Operator
  # release, from its Go module (the one place this machine may download it from).
  local v; v=$(mod_version github.com/prometheus-operator/prometheus-operator prometheus-operator-crds)
  local out="$cache/bin/prometheus-operator-crds-$v"
  [ -f "$out/servicemonitors.yaml" ] && [ -f "$out/prometheusrules.yaml" ] && return 0
  local src; src=$(cd "$here/gomod/prometheus-operator-crds" && go mod download github.com/prometheus-operator/prometheus-operator && go list -m -f '{{.Dir}}' github.com/prometheus-operator/prometheus-operator)
  mkdir -p "$out.partial"
  cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$out.partial/servicemonitors.yaml"
  cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" "$out.partial/prometheusrules.yaml"
  chmod u+w "$out.partial"/*.yaml
  rm -rf "$out"; mv "$out.partial" "$out"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(etcd kwok kubernetes grype helm oras prometheus_operator_crds)
total=$SECONDS
for t in "${tools[@]}"; do "$t"; done
echo "build: tools ready under $cache/bin in $((SECONDS - total)) s"
