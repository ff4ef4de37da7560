"""Lineage store: SQLModel tables (Core statements on their `__table__`), named migrations and the `Store`
query API. Imports no torch."""

from vss_cli.store.keys import canonical_json, config_key
from vss_cli.store.rows import Artifact, Lineage, LineageNode, Metric, Run
from vss_cli.store.store import Store, artifact_intact, file_digest, file_sha256, new_run_id, worker_id
from vss_cli.store.tables import ARTIFACT_KINDS, KINDS, RELATIONS, STATUSES, TERMINAL_STATUSES

__all__ = [
    "ARTIFACT_KINDS",
    "KINDS",
    "RELATIONS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "Artifact",
    "Lineage",
    "LineageNode",
    "Metric",
    "Run",
    "Store",
    "artifact_intact",
    "canonical_json",
    "config_key",
    "file_digest",
    "file_sha256",
    "new_run_id",
    "worker_id",
]
