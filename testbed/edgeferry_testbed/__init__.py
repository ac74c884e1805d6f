"""The local testbed: hub and K3s-style edge clusters, Docker, registry, Prometheus."""
