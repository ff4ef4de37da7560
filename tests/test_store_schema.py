"""Lineage store: schema and migrations (tables, indexes, SQLModel read models), keys and ids."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect, text

from vss_cli.store import Artifact, Metric, Run, Store, canonical_json, config_key, new_run_id
from vss_cli.store.migrations import MIGRATIONS
from vss_cli.store.tables import RUN, TABLES

EXPECTED_COLUMNS = {
    "run": {"id", "kind", "status", "name", "config", "config_key", "created_at", "started_at", "finished_at",
            "heartbeat_at", "worker", "attempt", "error", "versions", "out_dir"},
    "edge": {"id", "parent_id", "child_id", "relation", "created_at"},
    "artifact": {"id", "run_id", "kind", "path", "sha256", "bytes", "created_at"},
    "metric": {"id", "run_id", "key", "value", "step", "created_at"},
    "migrations": {"name", "applied_at"},
}  # fmt: skip
EXPECTED_INDEXES = {
    "run": {"ix_run_config_key", "ix_run_kind", "ix_run_status"},
    "metric": {"ix_metric_run_id"},
    "artifact": {"ix_artifact_run_id"},
    "edge": {"ix_edge_child_id", "ix_edge_parent_id"},
}
SCALE_INDEXES = {
    "run": {"ix_run_kind_created_at", "ix_run_status_heartbeat_at"},
    "metric": {"ix_metric_run_key_id"},
    "artifact": {"ix_artifact_path"},
    "edge": {"ix_edge_parent_relation", "ix_edge_child_relation"},
}


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    with Store(tmp_path / "vss.db") as s:
        yield s


# -- schema and migrations ---------------------------------------------------------------------


def test_migrations_build_the_schema_on_a_blank_database(store: Store, store_url: str) -> None:
    if "://" not in store_url:
        assert Path(store_url).is_file()  # the parent folder was created
    assert store.applied == [fn.__name__ for fn in MIGRATIONS]
    insp = inspect(store.engine)
    assert set(insp.get_table_names()) == set(EXPECTED_COLUMNS)
    for table, columns in EXPECTED_COLUMNS.items():
        assert {c["name"] for c in insp.get_columns(table)} == columns
    for table, indexes in EXPECTED_INDEXES.items():
        assert indexes | SCALE_INDEXES[table] <= {ix["name"] for ix in insp.get_indexes(table)}
    assert [fn.__name__ for fn in MIGRATIONS][:2] == ["m001_initial", "m002_scale_indexes"]
    uniques = insp.get_unique_constraints("edge")
    assert [set(u["column_names"]) for u in uniques] == [{"parent_id", "child_id", "relation"}]
    fks = {(fk["referred_table"], tuple(fk["constrained_columns"])) for fk in insp.get_foreign_keys("edge")}
    assert fks == {("run", ("parent_id",)), ("run", ("child_id",))}


def test_rows_are_read_models_of_the_tables_fields() -> None:
    """The rows the store hands out subclass the SQLModel field classes the tables are built from (one
    definition of the columns), in the table's column order (what `Run.from_row` relies on)."""
    from vss_cli.store.models import ArtifactFields, MetricFields, RunFields, RunRecord

    assert issubclass(Run, RunFields) and issubclass(Artifact, ArtifactFields) and issubclass(Metric, MetricFields)
    assert RUN is RunRecord.__table__
    assert list(Run.model_fields) == list(RunFields.model_fields)
    assert [c.name for c in RUN.columns] == [n.removesuffix("_json") for n in RunFields.model_fields]


def test_a_stored_runs_config_is_decoded_when_first_read(store: Store) -> None:
    made = store.create_run(kind="train", config={"model": {"name": "unet"}, "lr": 0.01}, versions={"vss": "x"})
    got = store.get_run(made.id)
    assert "config" not in vars(got) and "versions" not in vars(got)  # still JSON text
    assert got == made and got.config == {"model": {"name": "unet"}, "lr": 0.01} and got.versions == {"vss": "x"}
    assert vars(got)["config"] is got.config  # decoded once, then kept
    again = store.get_run(made.id)
    assert pickle.loads(pickle.dumps(again)) == made and again.to_dict()["config"] == made.config
    assert again.model_copy(update={"status": "failed"}).config == made.config
    assert Run.model_validate(again.model_dump()) == made  # the fast construction builds a valid model
    with pytest.raises(ValidationError):
        again.status = "failed"  # frozen
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        again.nope  # noqa: B018


def _reflected(insp, table: str) -> dict[str, object]:
    """What the database has: column -> (nullable, type affinity), index -> columns, uniques, foreign keys."""
    return {
        "columns": {c["name"]: (c["nullable"], c["type"]._type_affinity) for c in insp.get_columns(table)},
        # PostgreSQL lists a UNIQUE constraint's index too
        "indexes": {ix["name"]: tuple(ix["column_names"]) for ix in insp.get_indexes(table)
                    if not ix.get("duplicates_constraint")},
        "uniques": {u["name"]: tuple(u["column_names"]) for u in insp.get_unique_constraints(table)},
        "foreign_keys": {(tuple(fk["constrained_columns"]), fk["referred_table"]) for fk in insp.get_foreign_keys(table)},
    }


def _declared(table) -> dict[str, object]:
    """The same, from a SQLModel table model's `__table__`."""
    from sqlalchemy import UniqueConstraint

    return {
        "columns": {c.name: (c.nullable, c.type._type_affinity) for c in table.columns},
        "indexes": {ix.name: tuple(c.name for c in ix.columns) for ix in table.indexes},
        "uniques": {u.name: tuple(c.name for c in u.columns) for u in table.constraints
                    if isinstance(u, UniqueConstraint)},
        "foreign_keys": {((fk.parent.name,), fk.column.table.name) for fk in table.foreign_keys},
    }


def test_sqlmodel_tables_match_the_migrated_schema(store: Store) -> None:
    """The SQLModel table models (the one schema definition) are exactly what the migrations build, on
    each back-end: columns, nullability, type, indexes (names and columns), unique constraints, foreign
    keys. A migration that adds a column the models lack, or a model field no migration creates, fails here."""
    insp = inspect(store.engine)
    assert {t.name for t in TABLES} == set(insp.get_table_names())
    for table in TABLES:
        assert _declared(table) == _reflected(insp, table.name), table.name


def test_the_schema_check_sees_a_drifted_model(store: Store) -> None:
    """The comparison above is not vacuous: a nullability, index or column change is a difference."""
    from sqlalchemy import Column, Index, MetaData, Text

    insp = inspect(store.engine)
    drifted = RUN.to_metadata(MetaData())
    drifted.c.kind.nullable = True
    assert _declared(drifted) != _reflected(insp, "run")
    extra = RUN.to_metadata(MetaData())
    extra.append_column(Column("worker_token", Text))
    assert _declared(extra) != _reflected(insp, "run")
    indexed = RUN.to_metadata(MetaData())
    Index("ix_run_name", indexed.c.name)
    assert _declared(indexed) != _reflected(insp, "run")


def test_migrations_are_idempotent(store_url: str) -> None:
    Store(store_url).close()
    with Store(store_url) as again:
        assert again.applied == []
        with again.engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM migrations")).scalars().all()
    assert sorted(names) == sorted(fn.__name__ for fn in MIGRATIONS)


def test_sqlite_pragmas(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000  # then reported and retried (Retry)


def test_a_sqlite_url_works_like_a_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'x.db'}"
    with Store(url) as s:
        run = s.create_run(kind="eval", config={})
    with Store(tmp_path / "deep" / "x.db") as s:
        assert s.get_run(run.id).kind == "eval"


# -- keys and ids ------------------------------------------------------------------------------


def test_canonical_json_and_config_key() -> None:
    assert canonical_json({"b": 1, "a": (0.1, 2.0), "p": Path("/x")}) == '{"a":[0.1,2.0],"b":1,"p":"/x"}'
    assert config_key({"a": 1, "b": 2}) == config_key({"b": 2, "a": 1})
    assert config_key({"a": 1}, ["s1", "s2"]) != config_key({"a": 1}, ["s2", "s1"])  # roles matter
    assert config_key({"a": 1}, ["s1"]) != config_key({"a": 1})
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json({"a": float("nan")})


def test_run_ids_are_unique_and_sort_by_creation() -> None:
    ids = [new_run_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(len(i) == 20 and int(i, 16) >= 0 for i in ids)
