"""Content keys for runs: a canonical JSON form of a config and the `config_key` built from it.

`config_key` is what makes `--skip-existing` exact (DESIGN §3): two runs share a key only when their
configs are equal *and* they start from byte-identical parent artifacts.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any


def _jsonable(obj: Any) -> Any:
    """Map the non-JSON values a config may hold (paths, enums, sets, numpy scalars) to JSON ones."""
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=canonical_json)
    if hasattr(obj, "item"):  # numpy/torch scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} value {obj!r} cannot go into a run config: use plain JSON types")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; floats use Python's shortest round-trip repr.

    Tuples become lists. `1` and `1.0` stay different (an int option and a float option are
    different configs).
    """
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_jsonable
        )
    except ValueError as exc:  # NaN/inf have no JSON form and would make keys unstable
        raise ValueError(f"run config holds a non-finite number ({exc}): pass finite values") from None


def config_key(config: dict, parent_shas: Sequence[str] = ()) -> str:
    """sha256 hex of the canonical config followed by each parent artifact's sha256.

    The parent shas are hashed in the order given, not sorted: roles matter (evaluating A against
    baseline B is not evaluating B against baseline A), so callers pass them in a fixed role order.
    """
    digest = hashlib.sha256(canonical_json(config).encode("utf-8"))
    for sha in parent_shas:
        digest.update(b"\0" + sha.encode("ascii"))
    return digest.hexdigest()
