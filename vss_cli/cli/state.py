"""Global CLI state (database location, verbosity) shared by every command."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DB = Path("runs") / "vss.db"


@dataclass
class AppState:
    db: str | None = None
    quiet: bool = False
    debug: bool = False
    threads: int | None = None  # --threads as given (None: vss's default)
    _store: object | None = field(default=None, repr=False)

    def db_url(self) -> str:
        return self.db or os.environ.get("VSS_DB") or str(DEFAULT_DB)

    def store(self):
        """Open (and migrate) the lineage store on first use."""
        if self._store is None:
            from vss_cli.store import Store

            self._store = Store(self.db_url())
        return self._store


STATE = AppState()
