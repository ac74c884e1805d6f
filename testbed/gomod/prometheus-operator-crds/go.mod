// Pins the Prometheus Operator release whose CRDs (ServiceMonitor, PrometheusRule) the tests
// apply to the hub, to validate edgeferry's monitoring manifests against the real schemas.
// Nothing is built from it: testbed/tools/build.sh only downloads the module and copies the CRDs.
module edgeferry.io/testbed/prometheus-operator-crds

go 1.24

require github.com/prometheus-operator/prometheus-operator v0.85.0
