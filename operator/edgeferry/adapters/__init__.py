"""Adapters to the outside world: hadolint, Docker, syft/grype, registries, Kubernetes clusters."""
