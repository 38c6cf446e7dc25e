"""Targets of the CLI: ``host[:port]`` or a TOML/CSV file of RTUs with their settings."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from iec104.errors import SettingsError

__all__ = ["Target", "parse_targets"]

_SETTINGS = {"t0", "t1", "t2", "t3", "k", "w", "cot_size", "ca_size", "ioa_size", "tz",
             "gi_interval", "gi_group", "ci_interval", "qcc", "clock_sync_interval",
             "reconnect", "gi_on_start"}


@dataclass
class Target:
    host: str
    port: int = 2404
    name: str | None = None
    points: str | None = None
    settings: dict = field(default_factory=dict)


def _target(row: dict, where: str) -> Target:
    row = {str(k).strip().lower().replace("-", "_"): v for k, v in row.items()
           if v is not None and v != ""}
    if "host" not in row:
        raise SettingsError(f"{where}: a target needs a host")
    unknown = set(row) - _SETTINGS - {"host", "port", "name", "points"}
    if unknown:
        raise SettingsError(f"{where}: unknown settings {', '.join(sorted(unknown))}")
    settings = {k: row[k] for k in _SETTINGS & set(row)}
    for k, v in settings.items():
        if isinstance(v, str) and k != "tz":
            settings[k] = float(v) if "." in v else int(v)
    return Target(str(row["host"]), int(row.get("port", 2404)), row.get("name"),
                  row.get("points"), settings)


def parse_targets(specs: list[str]) -> list[Target]:
    """``host``, ``host:port``, ``[v6]:port`` or a .toml (``[[rtu]]`` tables) / .csv file."""
    out = []
    for spec in specs:
        path = Path(spec)
        if path.suffix.lower() == ".toml" and path.exists():
            doc = tomllib.loads(path.read_text())
            rows = doc.get("rtu") or doc.get("targets") or []
            out += [_target(r, f"{path} [[rtu]] #{i + 1}") for i, r in enumerate(rows)]
        elif path.suffix.lower() == ".csv" and path.exists():
            df = pl.read_csv(path, infer_schema_length=0)
            out += [_target(r, f"{path} row {i + 1}") for i, r in enumerate(df.iter_rows(named=True))]
        else:
            host, _, port = spec.rpartition(":") if spec.count(":") == 1 or spec.startswith("[") \
                else (spec, "", "")
            host = host.strip("[]") or spec
            try:
                out.append(Target(host, int(port) if port else 2404))
            except ValueError:
                raise SettingsError(f"target {spec!r}: expected HOST[:PORT] or a .toml/.csv file") from None
    if not out:
        raise SettingsError("no targets")
    return out
