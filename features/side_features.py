"""Side features of users and items as integer codes aligned with the id vocabularies.

Every feature becomes an (n_entities, width) int64 matrix of codes, 0 meaning missing: strings map
to 1..K in sorted order, numbers to quantile buckets 1..B, lists (e.g. genres) to up to ``width``
codes. Towers embed each code and mean-pool the non-zero slots, so the same model code serves any
source's features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

MAX_WIDTH = 4
N_BUCKETS = 10


def _codes(values: pl.Series) -> tuple[np.ndarray, int]:
    """Codes (n, width) and cardinality (codes go up to it) of one column."""
    if values.dtype == pl.List(pl.String) or isinstance(values.dtype, pl.List):
        flat = values.explode().drop_nulls().cast(pl.String)
        vocab = {v: i + 1 for i, v in enumerate(sorted(flat.unique().to_list()))}
        width = min(MAX_WIDTH, max(1, int(values.list.len().max() or 1)))
        out = np.zeros((len(values), width), dtype=np.int64)
        for row, items in enumerate(values.to_list()):
            for slot, v in enumerate((items or [])[:width]):
                out[row, slot] = vocab.get(str(v), 0)
        return out, len(vocab)
    if values.dtype.is_numeric():
        x = values.cast(pl.Float64).to_numpy()
        finite = np.isfinite(x)
        if not finite.any():
            return np.zeros((len(x), 1), np.int64), 0
        edges = np.unique(np.quantile(x[finite], np.linspace(0, 1, N_BUCKETS + 1)[1:-1]))
        codes = np.where(finite, np.searchsorted(edges, np.nan_to_num(x), side="right") + 1, 0)
        return codes[:, None].astype(np.int64), len(edges) + 1
    strings = values.cast(pl.String)
    vocab = {v: i + 1 for i, v in enumerate(sorted(strings.drop_nulls().unique().to_list()))}
    codes = np.array([vocab.get(v, 0) if v is not None else 0 for v in strings.to_list()])
    return codes[:, None].astype(np.int64), len(vocab)


def encode(vocab: pl.DataFrame, table: pl.DataFrame, key: str, index: str) -> dict[str, np.ndarray]:
    """Codes of every feature column of ``table`` for each row of ``vocab`` (by ``index`` order).

    ``vocab`` has ``key`` (external id) and ``index``; ``table`` has ``key`` plus feature columns.
    Entities missing from ``table`` get code 0 everywhere.
    """
    if key not in table.columns:
        raise ValueError(f"side-feature table lacks the id column {key!r}; has {table.columns}")
    joined = vocab.sort(index).join(table.unique(key, keep="first"), on=key, how="left")
    joined = joined.sort(index)
    return {col: _codes(joined[col])[0] for col in table.columns if col != key}


def cardinalities(codes: dict[str, np.ndarray]) -> dict[str, int]:
    """Largest code per feature (the embedding table needs one more row, for 0)."""
    return {name: int(c.max()) for name, c in codes.items()}


def save(path: str | Path, codes: dict[str, np.ndarray]) -> None:
    np.savez(path, **codes)


def load(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        return {}
    with np.load(path) as z:
        return {name: z[name] for name in z.files}
