"""Fixtures of the two-instance tests: a shared database and a cluster of bot processes."""

from tests.instances.harness import cluster, shared_db

__all__ = ["cluster", "shared_db"]
