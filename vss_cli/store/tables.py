"""The lineage store's Core tables and vocabularies (DESIGN §3).

The tables are those of the SQLModel table models in `models` (the one schema definition); queries and
writes are Core statements on them, so a hot read such as `vss runs list` never builds an ORM object.
"""

from vss_cli.store.models import ArtifactRecord, EdgeRecord, MetricRecord, MigrationRecord, RunRecord

KINDS = ("train", "finetune", "prune", "eval", "bench", "cell", "predict", "import", "export",
         "profile")
STATUSES = ("pending", "running", "completed", "failed", "interrupted")
TERMINAL_STATUSES = ("completed", "failed", "interrupted")
RELATIONS = ("pruned-from", "finetuned-from", "evaluates", "baseline-of", "cell-of", "step-of",
             "exported-from")
# Artifact kinds are free text; these are the ones the workflows write.
ARTIFACT_KINDS = ("checkpoint", "last-checkpoint", "report", "plot", "confusion", "widths", "summary",
                  "export", "latency-table")


def check_choice(value: str, allowed: tuple[str, ...] | list[str], what: str) -> None:
    """ConfigError naming the allowed values unless `value` is one of them."""
    if value not in allowed:
        from vss_cli.errors import ConfigError

        raise ConfigError(f"unknown {what} '{value}': use one of {', '.join(allowed)}")


RUN = RunRecord.__table__
EDGE = EdgeRecord.__table__
ARTIFACT = ArtifactRecord.__table__
METRIC = MetricRecord.__table__
MIGRATIONS = MigrationRecord.__table__
TABLES = (RUN, EDGE, ARTIFACT, METRIC, MIGRATIONS)
