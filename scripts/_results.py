"""Shared by the measurement scripts: write a table with the provenance of its numbers."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.results.run_folder import provenance, write_csv

PROVENANCE = ("time", "device_name", "git_commit", "git_dirty", "torch_version", "hostname", "command")


def save(table: pd.DataFrame, out_dir: str, name: str, device: str = "cpu") -> pd.DataFrame:
    """``table`` plus provenance columns, written atomically to ``out_dir/name``; returns what was written."""
    prov = provenance(device)
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.assign(**{k: prov[k] for k in PROVENANCE})
    write_csv(table, path)
    return table
