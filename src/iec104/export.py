"""Writing tables to files: by extension, atomically, and in rotation for long runs."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import polars as pl

__all__ = ["write_table", "file_mode", "rotation_name", "RotatingWriter", "FORMATS"]

FORMATS = {".parquet": "parquet", ".csv": "csv", ".arrow": "ipc", ".ipc": "ipc",
           ".feather": "ipc", ".jsonl": "ndjson", ".ndjson": "ndjson"}


def _for_text(df: pl.DataFrame) -> pl.DataFrame:
    # CSV and JSON Lines have no nested or object columns; datetimes print as ISO 8601
    return df.select([pl.col(c).cast(pl.String) if isinstance(t, (pl.List, pl.Struct, pl.Object))
                      else pl.col(c) for c, t in df.schema.items()])


# a text cell a spreadsheet runs as a formula when it starts so (OWASP's CSV injection), also
# after spaces (an import that trims them); a number written as text ("-5", "+1e3") and a lone
# "-" or "+" (a unit, an empty description) are no formula: they stay as they are
_FORMULA_START = r"^\s*[=+\-@]|^[\t\r]"
_NOT_FORMULA = r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)?\s*$"


def _quoted(s: pl.Expr) -> pl.Expr:
    return pl.when(s.str.contains(_FORMULA_START) & ~s.str.contains(_NOT_FORMULA)) \
        .then(pl.lit("'") + s).otherwise(s)


def _csv_safe(df: pl.DataFrame) -> pl.DataFrame:
    # point names come from the RTU's list, maybe a hostile one: a leading ' keeps them text;
    # so do the column names (a list's extra columns are named by its author)
    text = [c for c, t in df.schema.items() if isinstance(t, (pl.String, pl.Categorical, pl.Enum))]
    names = pl.select(_quoted(pl.lit(pl.Series(df.columns, dtype=pl.String)))).to_series()
    return df.with_columns(_quoted(pl.col(c).cast(pl.String)).alias(c) for c in text) \
        .rename(dict(zip(df.columns, names)))


def file_mode() -> int:
    """The mode a new file gets under the process's umask (0644 under the usual 022): a
    temporary file of mkstemp is 0600, chmod-ed to this before it is renamed into place."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_table(df: pl.DataFrame, path: str | Path, *, csv_safe: bool = True) -> Path:
    """Write ``df`` to ``path`` in the format its extension names (.parquet, .csv,
    .arrow/.ipc/.feather, .jsonl/.ndjson): to a temporary file beside it, then renamed, so a
    reader never sees half a file. In a CSV, a text cell or column name starting with ``=``,
    ``+``, ``-`` or ``@`` (after any spaces), tab or CR (a formula to a spreadsheet) gets a
    leading ``'``, unless it is a plain number or a lone ``-``/``+``; ``csv_safe=False``
    writes text as it is."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown extension {path.suffix!r}; use one of "
                         f"{', '.join(sorted(FORMATS))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "parquet":
            df.write_parquet(tmp)
        elif fmt == "ipc":
            df.write_ipc(tmp)
        elif fmt == "csv":
            (_csv_safe(_for_text(df)) if csv_safe else _for_text(df)).write_csv(tmp)
        else:
            _for_text(df).write_ndjson(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rotation_name(prefix: str, index: int, tag: str, fmt: str) -> str:
    """A rotated file's name: ``prefix-000001-20261124T010203-<tag>.parquet``; ``tag`` is
    random per writer (``os.urandom(4).hex()``), so that two writers on one directory in
    the same second never make the same name (the second file would replace the first)."""
    return f"{prefix}-{index:06d}-{time.strftime('%Y%m%dT%H%M%S')}-{tag}.{fmt}"


class RotatingWriter:
    """Accumulates frames and writes them as a sequence of complete files, rotating by
    rows and/or seconds (named by :func:`rotation_name`). A write that fails (disk full)
    keeps its rows: the next ``write`` or ``close`` tries again."""

    def __init__(self, directory: str | Path, *, prefix: str = "events", fmt: str = "parquet",
                 rotate_rows: int | None = 1_000_000, rotate_seconds: float | None = None):
        if "." + fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: one of {', '.join(sorted(FORMATS))}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.fmt = prefix, fmt
        self.rotate_rows, self.rotate_seconds = rotate_rows, rotate_seconds
        self.files: list[Path] = []
        self._tag = os.urandom(4).hex()
        self._frames: list[pl.DataFrame] = []
        self._rows = 0
        self._opened = time.monotonic()

    def write(self, df: pl.DataFrame) -> None:
        if len(df):
            self._frames.append(df)
            self._rows += len(df)
        while self.rotate_rows and self._rows >= self.rotate_rows:
            self._flush(self.rotate_rows)
        if self._rows and self.rotate_seconds is not None and \
                time.monotonic() - self._opened >= self.rotate_seconds:
            self._flush(self._rows)

    def _flush(self, n: int) -> None:
        df = pl.concat(self._frames, how="vertical_relaxed")
        out, rest = df.head(n), df.slice(n)
        name = rotation_name(self.prefix, len(self.files) + 1, self._tag, self.fmt)
        self.files.append(write_table(out, self.dir / name))
        # dropped once in their file: a failed write keeps them for the next try
        self._frames = [rest] if len(rest) else []
        self._rows = len(rest)
        self._opened = time.monotonic()

    def close(self) -> None:
        if self._rows:
            self._flush(self._rows)
