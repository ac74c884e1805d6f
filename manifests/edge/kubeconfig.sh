#!/bin/sh
# Print the kubeconfig that lets the edgeferry operator reach this edge site as
# edgeferry-system/edgeferry-edge, made from the token Secret of `manifests/edge/base/`.
# Run it with kubectl pointed at the site (after `kubectl apply -k manifests/edge/...`), giving
# the API server's URL as the hub reaches it:
#
#   KUBECONFIG=site-admin.kubeconfig sh manifests/edge/kubeconfig.sh https://site-a.example:6443 \
#     site-a > site-a.kubeconfig
#
# then store it on the hub, in the EdgeTarget's namespace (docs/install.md):
#
#   kubectl -n ml-team create secret generic site-a-kubeconfig --from-file=kubeconfig=site-a.kubeconfig
#
# The CA is the one the site's kube-controller-manager puts into the token Secret (`ca.crt`);
# if the API server's certificate is signed by another CA, set certificate-authority-data to it.
set -eu
server=${1:?usage: kubeconfig.sh <API server URL as the hub reaches it> [cluster name]}
name=${2:-edge}
kubectl=${KUBECTL:-kubectl}
secret="-n edgeferry-system get secret edgeferry-edge-token"

token=""
tries=0
while [ -z "$token" ]; do
  token=$($kubectl $secret -o 'jsonpath={.data.token}')
  if [ -z "$token" ]; then
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
      echo "kubeconfig.sh: secret edgeferry-system/edgeferry-edge-token has no token after 30 s;" \
        "is kube-controller-manager running with --service-account-private-key-file?" >&2
      exit 1
    fi
    sleep 1
  fi
done
ca=$($kubectl $secret -o 'jsonpath={.data.ca\.crt}')

cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: $name
    cluster:
      server: $server
      certificate-authority-data: $ca
users:
  - name: edgeferry-edge
    user:
      token: $(printf '%s' "$token" | base64 -d)
contexts:
  - name: $name
    context:
      cluster: $name
      user: edgeferry-edge
current-context: $name
KUBECONFIG
