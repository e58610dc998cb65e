"""Describe a table for people: format, version, row count, schema and the first rows."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

from maskfactory.infra import storage
from maskfactory.infra.settings import Settings


@dataclass
class TableInfo:
    uri: str
    format: str  # "delta" or "parquet"
    version: int | None  # Delta table version; None for plain Parquet
    num_rows: int
    schema: pa.Schema
    head: pd.DataFrame  # first rows, binary cells shortened for display


def describe_table(uri: str, rows: int = 5, settings: Settings | None = None) -> TableInfo:
    """Open ``uri`` as a Delta table, or else as Parquet, and summarise it."""
    uri = storage.normalize(uri)
    fs, path = storage.filesystem(uri, settings)
    if fs.exists(f"{path}/_delta_log"):  # what makes a folder a Delta table
        dt = DeltaTable(uri, storage_options=storage.delta_options(uri, settings))
        dataset, fmt, version = dt.to_pyarrow_dataset(), "delta", dt.version()
    else:
        if not fs.exists(path):
            raise FileNotFoundError(f"{uri}: no such table") from None
        dataset, fmt, version = pads.dataset(path, filesystem=fs, format="parquet"), "parquet", None
    head = dataset.head(rows).to_pandas() if rows else pd.DataFrame()
    return TableInfo(uri, fmt, version, dataset.count_rows(), dataset.schema, head.map(_short))


def _short(value: object) -> object:
    """Binary cells (RLE counts) print as their length, not as kilobytes of escapes."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value
