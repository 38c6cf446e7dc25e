"""Targets of the CLI: ``host[:port]`` or a TOML/CSV file of RTUs with their settings."""
from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from iec104.errors import SettingsError
from iec104.settings import KINDS

__all__ = ["Target", "parse_targets", "parse_address", "SETTINGS", "TLS_KEYS", "tls_settings"]

# what a target file may set: every session setting, read as the types SessionSettings
# declares for it (None left out: a file cannot say None, it leaves the setting out)
SETTINGS: dict[str, tuple[type, ...]] = {name: kinds for name, (kinds, _) in KINDS.items()
                                         if name != "tls"}
# a file's TLS, made into settings["tls"]: paths, and the allow-list (fingerprints or files)
TLS_KEYS = ("tls_cert", "tls_key", "tls_ca", "tls_crl", "tls_allow")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or kind is bool:     # True is no number here, 1 no bool
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def _coerce(name: str, value: Any, where: str) -> Any:
    """A TOML value (typed) or a CSV cell (text) as the setting's type, or SettingsError:
    an int setting takes integers only (3 or "3"; never 3.0 or "3.5"), a float setting any
    number, a bool setting a TOML boolean or true/false, yes/no, on/off, 1/0 as text, tz a
    string."""
    kind = SETTINGS[name][0]                        # tz: str (a tzinfo is no file's value)
    if kind is Sequence:                            # ca: a TOML list or int, "1,2" or "1 2"
        return tuple(_coerce_int(name, v, where) for v in _items(value))
    if _is(value, kind):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if kind is bool and text in _TRUE | _FALSE:
            return text in _TRUE
        if kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    raise SettingsError(f"{where}: {name} = {value!r} is not a {kind.__name__}")


def _items(value: Any) -> list[Any]:
    """A list of a TOML list, one value, or a CSV cell separated by commas or spaces."""
    if isinstance(value, str):
        return value.replace(",", " ").split()
    return list(value) if isinstance(value, list) else [value]


def _coerce_int(name: str, value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise SettingsError(f"{where}: {name} = {value!r} is not an integer")


@dataclass
class Target:
    host: str
    port: int = 2404
    name: str | None = None
    points: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    standby: list[tuple[str, int]] = field(default_factory=list)   # a redundancy group


def _target(row: Any, where: str, base: Path | None = None) -> Target:
    """One target of a file row; ``base``: the file's folder, against which its relative
    ``points`` and ``tls_*`` paths are read."""
    if not isinstance(row, dict):
        raise SettingsError(f"{where}: a target is a table of settings, not {row!r}"
                            " (write [[rtu]], an array of tables, for each RTU)")
    row = {str(k).strip().lower().replace("-", "_"): v for k, v in row.items()
           if v is not None and v != ""}
    if "host" not in row:
        raise SettingsError(f"{where}: a target needs a host")
    unknown = set(row) - set(SETTINGS) - {"host", "port", "name", "points", "standby", *TLS_KEYS}
    if unknown:
        raise SettingsError(f"{where}: unknown settings {', '.join(sorted(unknown))}")
    for key in ("host", "name", "points", "tls_cert", "tls_key", "tls_ca", "tls_crl"):
        if key in row and (isinstance(row[key], bool) or not isinstance(row[key], (str, int))):
            raise SettingsError(f"{where}: {key} = {row[key]!r} is not a string")
    for key in ("points", "tls_cert", "tls_key", "tls_ca", "tls_crl"):
        if key in row:
            row[key] = _beside(str(row[key]), base)
    if "tls_allow" in row:                      # fingerprints, or certificate files beside
        row["tls_allow"] = [_beside(a, base) if isinstance(a, str) and base is not None
                            and not Path(a).is_absolute() and (base / a).exists() else a
                            for a in _items(row["tls_allow"])]
    settings = {k: _coerce(k, v, where) for k, v in row.items() if k in SETTINGS}
    if any(k in row for k in TLS_KEYS):
        settings["tls"] = tls_settings(*(row.get(k) for k in TLS_KEYS), where=where)
    port = _coerce_int("port", row.get("port", 2404), where)
    standby = [parse_address(str(a), where=f"{where}: standby") for a in _items(row.get("standby", []))]
    name = str(row["name"]) if "name" in row else None
    return Target(str(row["host"]), port, name, row.get("points"), settings, standby)


def _beside(path: str, base: Path | None) -> str:
    """A file's path as given when absolute (or with no base), else relative to ``base``."""
    p = Path(path).expanduser()
    return str(p if base is None or p.is_absolute() else base / p)


def parse_address(spec: str, *, where: str = "target") -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as (host, port); port 2404 when left out."""
    host, _, port = spec.rpartition(":") if spec.count(":") == 1 or spec.startswith("[") \
        else (spec, "", "")
    try:
        return host.strip("[]") or spec, int(port) if port else 2404
    except ValueError:
        raise SettingsError(f"{where} {spec!r}: expected HOST[:PORT] or a .toml/.csv file") from None


def tls_settings(cert: Any, key: Any, ca: Any, crl: Any = None, allow: Any = None, *,
                 where: str = "TLS") -> Any:
    """The :class:`iec104.tls.TLS` of ``--tls-cert/--tls-key/--tls-ca/--tls-crl/--tls-allow``
    or a target's ``tls_cert/tls_key/tls_ca/tls_crl/tls_allow`` (paths; a missing file is a
    SettingsError naming it). ``allow``: the peer certificates allowed, SHA-256 fingerprints
    or certificate files, a list or one string separated by commas or spaces."""
    from iec104.tls import TLS
    for what, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca), ("tls_crl", crl)):
        if path is not None and not Path(str(path)).exists():
            raise SettingsError(f"{where}: {what} {path}: no such file")
    if key is not None and cert is None:
        raise SettingsError(f"{where}: tls_key without tls_cert")
    if isinstance(allow, str):
        allow = allow.replace(",", " ").split()
    tls = TLS(cert=cert, key=key, ca=ca, crl=crl, allowed=allow or None)
    try:
        tls.fingerprints                            # read the allow-list's files now
    except SettingsError as e:
        raise SettingsError(f"{where}: tls_allow: {e}") from None
    return tls


def parse_targets(specs: list[str]) -> list[Target]:
    """``host``, ``host:port``, ``[v6]:port`` or a .toml (``[[rtu]]`` tables) / .csv file."""
    out: list[tuple[Target, str]] = []             # each with where it was given
    for spec in specs:
        path = Path(spec)
        if path.suffix.lower() == ".toml" and path.exists():
            doc = tomllib.loads(path.read_text())
            key = "rtu" if "rtu" in doc else "targets"
            rows = doc.get(key) or []
            if not isinstance(rows, list):
                raise SettingsError(f"{path}: [{key}] is one table; write [[{key}]] for each RTU "
                                    "(an array of tables)")
            out += [(_target(r, w, path.parent), w) for i, r in enumerate(rows)
                    for w in [f"{path} [[{key}]] #{i + 1}"]]
        elif path.suffix.lower() == ".csv" and path.exists():
            try:
                df = pl.read_csv(path, infer_schema_length=0)
            except Exception as e:                  # Polars' own errors: one line, no traceback
                raise SettingsError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
            out += [(_target(r, w, path.parent), w) for i, r in enumerate(df.iter_rows(named=True))
                    for w in [f"{path} row {i + 1}"]]
        else:
            out.append((Target(*parse_address(spec)), f"target {spec}"))
    if not out:
        raise SettingsError("no targets")
    _no_duplicates(out)
    return [t for t, _ in out]


def _no_duplicates(targets: list[tuple[Target, str]]) -> None:
    """One session per RTU: the same address (or standby address) or the same name twice is
    refused, naming both places."""
    seen: dict[Any, str] = {}
    for t, where in targets:
        keys = [("address", f"{h}:{p}") for h, p in [(t.host, t.port), *t.standby]]
        keys += [("name", t.name)] if t.name is not None else []
        for i, key in enumerate(keys):
            if key in keys[:i]:                 # within one group: a connection twice
                raise SettingsError(f"{where}: {key[0]} {key[1]} given twice in its group "
                                    "(its address and standby addresses): one each")
            if key in seen:
                raise SettingsError(f"{where}: {key[0]} {key[1]} given twice (also in "
                                    f"{seen[key]}): one target per RTU")
        seen.update(dict.fromkeys(keys, where))
