"""The local testbed: a hub and K3s-style edge clusters, Docker, a registry and Prometheus on 127.0.0.1."""
