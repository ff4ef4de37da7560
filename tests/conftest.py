"""Shared fixtures: every test gets its own database and working directory; no progress bars.

Store back-ends: `pg_url` is a PostgreSQL URL with a fresh schema of its own (from
`VSS_TEST_PG_URL`, which `.ci/run` always sets; without it the test is skipped, or fails when
`VSS_REQUIRE_PG=1`), and `store_url` runs a test once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import quote

import pytest
import torch

# One intra-op thread: on a 2-core machine shared with subprocess tests, two OpenMP threads per
# process oversubscribe the cores and tiny convolutions slow down by two orders of magnitude.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    from vss_cli import signals

    signals._received.clear()  # a stop signal one test sent is not the next test's (one process per `vss`)
    monkeypatch.setenv("VSS_DB", str(tmp_path / "vss.db"))
    monkeypatch.setenv("VSS_QUIET", "1")
    monkeypatch.chdir(tmp_path)
    yield


def _with_search_path(url: str, schema: str) -> str:
    """`url` whose connections use `schema` first (libpq `options`), so tables land in it."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_url():
    """A PostgreSQL URL whose tables live in a fresh schema, dropped after the test."""
    base = os.environ.get("VSS_TEST_PG_URL")
    if not base:
        reason = "no PostgreSQL server: set VSS_TEST_PG_URL (`eval \"$(bash .ci/pg.sh start)\"`)"
        if os.environ.get("VSS_REQUIRE_PG") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from sqlalchemy import create_engine, text

    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(base, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    """The database of a store test: a SQLite file (in a folder that does not exist yet) or a
    PostgreSQL schema of its own."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "sub" / "vss.db")


@pytest.fixture
def store(store_url: str):
    """A migrated store on each back-end (see `store_url`)."""
    from vss_cli.store import Store

    with Store(store_url) as s:
        yield s


@pytest.fixture
def tiny_batches():
    """Two fixed (images, labels) batches of 4 × 3 × 32 × 32 with 5 classes and some ignore pixels."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        x = torch.randn(4, 3, 32, 32, generator=g)
        y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0.5).long()
        y[:, :2, :2] = 255
        batches.append((x, y))
    return batches


@pytest.fixture(scope="session")
def tiny_pruned_unet():
    """Factory: (model, pruned copy, ModelSpec, pruning history, dataset spec) for a tiny random-init U-Net on
    the synthetic dataset, l1-pruned at `ratio` (what the eval and predict tests compare)."""

    def make(ratio: float = 0.3, size: tuple[int, int] = (32, 48)):
        import copy

        from vss_cli.data import get_spec
        from vss_cli.engine.checkpoint import ModelSpec
        from vss_cli.engine.complexity import count_complexity
        from vss_cli.models import build_model, get_model_info
        from vss_cli.pruning.registry import get_method
        from vss_cli.workflows.prune import PruneOptions, prune_model

        spec, kw = get_spec("synthetic"), get_model_info("unet").tiny_kwargs
        torch.manual_seed(0)
        model = build_model("unet", spec.num_classes, **kw).eval()
        pruned = copy.deepcopy(model)
        _, history = prune_model(
            pruned, "unet", get_method("l1"), PruneOptions(ckpt="", samples=0, global_ratio=ratio), input_size=size,
            device="cpu", batch_source=None, fit=None, num_classes=spec.num_classes, ignore_index=spec.ignore_index,
            count=lambda m: count_complexity(m, size),
        )
        return model, pruned, ModelSpec("unet", spec.num_classes, kw), history, spec

    return make


@pytest.fixture
def tiny_baseline(tmp_path):
    """A random-init U-Net (width 1/8) checkpoint on the synthetic dataset: the baseline the fault and
    refusal tests prune, bench and evaluate."""
    from vss_cli.data import get_spec
    from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
    from vss_cli.models import build_model

    spec = get_spec("synthetic")
    torch.manual_seed(0)
    path = tmp_path / "base.pt"
    return save_checkpoint(path, model=build_model("unet", spec.num_classes, width=0.125),
                           spec=ModelSpec("unet", spec.num_classes, {"width": 0.125}), dataset=spec.to_dict())
