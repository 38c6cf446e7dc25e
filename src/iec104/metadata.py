"""Point lists: read (CSV/XLSX), validate, keep per station, join with live values.

A point list is the operators' view of an RTU: which IOA is what, in which unit, scaled how,
and which IOAs accept commands. Imports are all or nothing: a bad file raises
:class:`PointListError` naming file, row and column, and the list in force stays.

Command points are the rows with a ``command_type`` (C_SC_NA_1, ..., or its number; also read
from ``command``, ``control type``, ...). Once a list with command points is in force,
:meth:`Catalog.check_command` refuses a command to any other (CA, IOA) of the station, and a
command whose type is not the listed one (its CP56Time2a variant counts as the same type);
``allow_unlisted=True`` skips the check. Optional ``min`` and ``max`` columns (also
``minimum``/``maximum``, ``low limit``/``high limit``) bound the command value, in the
units the command carries (the value passed to ``command()``, before any scaling): a value
outside [min, max] raises :class:`CommandOutOfLimits` naming the limit, the point and its
address; an empty cell means no limit on that side, a min above the max is refused. A
row's ``station`` (empty: every station) restricts it to that session.
"""
from __future__ import annotations

import asyncio
import codecs
import contextlib
import io
import math
import numbers
import os
import posixpath
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from xml.etree.ElementTree import Element, XMLPullParser
from xml.parsers import expat
from xml.sax.saxutils import escape

import polars as pl

from iec104.errors import CommandNotAllowed, CommandOutOfLimits, PointListError
from iec104.types import TypeID, family_of

__all__ = ["read_point_list", "PointListError", "CommandNotAllowed", "CommandOutOfLimits",
           "ImportStatus", "Catalog"]

# canonical column -> accepted spellings (compared without case, spaces, _ and -)
ALIASES = {
    "ioa": ["ioa", "address", "informationobjectaddress", "objectaddress", "ioaaddress",
            "infoaddress", "iaddress"],
    "ca": ["ca", "commonaddress", "asduaddress", "stationaddress", "casdu", "asdu"],
    "station": ["station", "rtu", "session"],
    "name": ["name", "tag", "signal", "pointname", "tagname", "signalname"],
    "description": ["description", "desc", "text", "comment"],
    "unit": ["unit", "units", "engineeringunit", "engunit", "eu"],
    "type": ["type", "typeid", "asdutype", "datatype", "kind"],
    "scale": ["scale", "factor", "gain", "multiplier"],
    "offset": ["offset", "bias"],
    "raw_min": ["rawmin", "rawlow"], "raw_max": ["rawmax", "rawhigh"],
    "eng_min": ["engmin", "englow"], "eng_max": ["engmax", "enghigh"],
    "command_type": ["commandtype", "command", "controltype", "cmdtype", "settype"],
    "min": ["min", "minimum", "lowlimit", "lolimit"],
    "max": ["max", "maximum", "highlimit", "hilimit"],
}
_LOOKUP = {alias: canon for canon, names in ALIASES.items() for alias in names}
# free text: a formula there without a computed value is a missing value, not a refusal
_TEXT = ("name", "description", "unit")
# what read_point_list reads: a file (CSV or workbook) or a DataFrame
PointListSource = str | os.PathLike[str] | pl.DataFrame
# the ``sbo`` cells that mark a point select before operate (the simulator reads them too)
SBO_WORDS = ("1", "true", "yes", "sbo")
_KIND = {"digital": 1, "binary": 1, "analog": 13, "analogue": 13, "counter": 15}
_QUALITY_BITS = (("iv", 0x80), ("nt", 0x40), ("sb", 0x20), ("bl", 0x10), ("ov", 0x01))
# what Catalog.parameters adds to the live values (and its join's markers)
_ADDED = ("status", "eng_value", *(name for name, _ in _QUALITY_BITS), "age",
          "_live", "_listed")
OUT_SCHEMA = pl.Schema({
    "station": pl.UInt32, "ca": pl.UInt16, "ioa": pl.UInt32, "family": pl.UInt8,
    "type_id": pl.UInt8, "name": pl.String, "description": pl.String, "unit": pl.String,
    "scale": pl.Float64, "offset": pl.Float64, "command_type": pl.UInt8,
    "min": pl.Float64, "max": pl.Float64,
})


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-./()]+", "", str(name).lower())


# the text a marked cell is read as: a private-use character, its reference, a tab, then its
# error value (empty: a formula without a computed value)
_MARK = "\ue104"
_CHUNK = 1 << 20
# a character in UTF-8 (a lead byte and its continuation bytes): in Windows-1252 text, a pair
# like "Â°" that nobody types
_UTF8_CHAR = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
# bytes a sheet that needs the XML parser has somewhere: a formula element (any namespace
# prefix: <f, <x:f), an attribute "e" (an error cell, t="e"), or NUL (UTF-16 XML, which these
# byte patterns cannot read); a superset, checked by bytes.find first (most sheets: none)
_SUSPECT = re.compile(rb"""[<:]f[\s/>]|["']e["']|\x00""")
# one tag, to its > outside quoted attribute values
_TAG = re.compile(rb"""<[^>"']*(?:"[^"]*"[^>"']*|'[^']*'[^>"']*)*>""")
_EMPTY_SHEET = (b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                b"<sheetData/></worksheet>")


def _is_sheet(name: str) -> bool:
    return name.startswith("xl/worksheets/") and name.endswith(".xml")


def _local(name: str) -> str:
    return name.rpartition("}")[2]


def _chunks(z: zipfile.ZipFile, name: str) -> Iterable[bytes]:
    with z.open(name) as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _elements(z: zipfile.ZipFile, name: str,
              wanted: tuple[str, ...]) -> Iterable[tuple[str, dict[str, str]]]:
    """The wanted elements of a part (local name, attributes by local name), streamed."""
    parser: XMLPullParser[Element] = XMLPullParser(("end",))
    for chunk in _chunks(z, name):
        parser.feed(chunk)
        # ("end" events only: each an element, never a namespace pair)
        for _, el in cast("Iterable[tuple[str, Element]]", parser.read_events()):
            if (local := _local(el.tag)) in wanted:
                yield local, {_local(k): v for k, v in el.attrib.items()}
            el.clear()


def _sheet_part(z: zipfile.ZipFile, sheet: str | int | None) -> tuple[str | None, str | None, bool]:
    """The name and part of the sheet read (None: not resolved, every sheet is scanned), and
    whether the workbook is flagged to calculate on load (xlsxwriter's: its <v>0</v> is a
    placeholder)."""
    sheets, placeholder = [], False
    for local, attrs in _elements(z, "xl/workbook.xml", ("sheet", "calcPr")):
        if local == "sheet":
            sheets.append(attrs)
        else:
            placeholder = attrs.get("fullCalcOnLoad") in ("1", "true")
    picked = ([a for a in sheets if a.get("name") == sheet] if isinstance(sheet, str)
              else sheets[sheet or 0:(sheet or 0) + 1])
    rels = "xl/_rels/workbook.xml.rels"
    if not picked or rels not in z.namelist():
        return None, None, placeholder
    target = next((a.get("Target", "") for _, a in _elements(z, rels, ("Relationship",))
                   if a.get("Id") == picked[0].get("id")), "")
    part = target[1:] if target.startswith("/") else posixpath.normpath("xl/" + target)
    if not target or part not in z.namelist():
        return None, None, placeholder
    return picked[0].get("name"), part, placeholder


def _marks(z: zipfile.ZipFile, name: str, placeholder: bool) -> list[tuple[int, int, str]]:
    """The cells of a sheet the reader would read wrong, as (offset of the cell, offset where
    its element ends or its end tag starts, its text when marked): an error value (read as
    empty: a scale of 1, no limit) and a formula without a computed value (no or an empty
    <v>, or the placeholder 0). Bytes are scanned first; the XML parser (expat: namespace
    prefixes, whitespace, comments as XML has them) only reads sheets that may hold one."""
    marks: list[tuple[int, int, str]] = []
    # qualified names as they come (x:c), the prefix dropped once per spelling: this runs for
    # every element of a sheet with formulas
    locals_: dict[str, str] = {}
    parser = expat.ParserCreate()
    parser.buffer_text = True
    at, ref, kind, formula, value = -1, "", None, False, None
    text: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal at, ref, kind, formula, value
        local = locals_.get(name) or locals_.setdefault(name, name.rpartition(":")[2])
        if local == "c":
            at, ref, kind, formula, value = (parser.CurrentByteIndex, attrs.get("r", "?"),
                                             attrs.get("t"), False, None)
        elif at < 0:
            pass
        elif local == "f":
            formula = True
        elif local == "v":
            text.clear()
            parser.CharacterDataHandler = text.append

    def end(name: str) -> None:
        nonlocal at, value
        local = locals_[name]
        if at < 0:
            pass
        elif local == "v":
            parser.CharacterDataHandler = None
            value = "".join(text)
        elif local == "c":
            if kind == "e":
                marks.append((at, parser.CurrentByteIndex, f"{ref}\t{value or '#?'}"))
            elif formula and (value is None or value == "" and kind != "str"
                              or placeholder and value == "0"):
                marks.append((at, parser.CurrentByteIndex, f"{ref}\t"))
            at = -1

    parser.StartElementHandler, parser.EndElementHandler = start, end
    tail = b""
    for chunk in _chunks(z, name):          # bytes first: most sheets end here
        buf, tail = tail + chunk, chunk[-2:]
        if (b"f" in buf or b'"e"' in buf or b"'e'" in buf or b"\x00" in buf) and \
                _SUSPECT.search(buf):
            break
    else:
        return marks
    for chunk in _chunks(z, name):
        parser.Parse(chunk, False)
    parser.Parse(b"", True)
    return marks


def _splice(src: Any, out: Any, marks: list[tuple[int, int, str]]) -> None:
    """``src``'s bytes to ``out``, streamed, each marked cell replaced by an inline string of
    ``_MARK`` and its text."""
    buf, at, pos = b"", 0, 0                # buf holds src from offset at, written up to pos

    def more() -> None:
        nonlocal buf, at, pos
        if not (chunk := src.read(_CHUNK)):
            raise zipfile.BadZipFile("a sheet shorter than its XML")
        buf, at, pos = buf[pos:] + chunk, at + pos, 0

    for start, close, text in marks:
        while at + len(buf) <= start:
            out.write(memoryview(buf)[pos:])
            pos = len(buf)
            more()
        out.write(memoryview(buf)[pos:start - at])
        pos = start - at
        # an empty element <c .../> ends where its tag does; else at its end tag </c>
        while (tag := _TAG.match(buf, pos)) is None or not tag[0].endswith(b"/>") and \
                (tag := _TAG.match(buf, close - at)) is None:
            more()
        out.write(('<c r="%s" t="inlineStr"><is><t>%s</t></is></c>' % (
            escape(text.partition("\t")[0], {'"': "&quot;"}), escape(_MARK + text))).encode())
        pos = tag.end()
    out.write(memoryview(buf)[pos:])
    shutil.copyfileobj(src, out, _CHUNK)


@contextlib.contextmanager
def _marked(path: Path, sheet: str | int | None) -> Iterator[tuple[Path, bool, str | None]]:
    """The workbook to read: ``path`` itself, or (when the sheet read has cells _marks finds)
    a copy in a temporary file whose such cells are marked text, its other sheets emptied
    (never read; a sheet that inflates to gigabytes is not copied); and the name of the
    sheet scanned, to read that very sheet (None: every sheet was scanned). Streamed: the
    memory is a chunk, a cell and the marks, whatever the sheet's size. .xls and .ods hold a
    computed value with every formula; XML the scan cannot parse is refused, not read
    unscanned."""
    try:
        z = zipfile.ZipFile(path) if path.suffix.lower() in (".xlsx", ".xlsm") else None
    except zipfile.BadZipFile:              # not a zip: the reader says what it is
        z = None
    if z is None:
        yield path, False, None
        return
    with z:
        name, part, placeholder = _sheet_part(z, sheet)
        marked = {n: m for n in ([part] if part else [n for n in z.namelist() if _is_sheet(n)])
                  if (m := _marks(z, n, placeholder))}
        if not marked:
            yield path, False, name
            return
        fd, tmp = tempfile.mkstemp(suffix=path.suffix)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w") as out:
                for info in z.infolist():
                    with z.open(info) as src, out.open(info.filename, "w",
                                                       force_zip64=True) as dst:
                        if info.filename in marked:
                            _splice(src, dst, marked[info.filename])
                        elif part and _is_sheet(info.filename):
                            dst.write(_EMPTY_SHEET)
                        else:
                            shutil.copyfileobj(src, dst, _CHUNK)
            yield Path(tmp), True, name
        finally:
            os.unlink(tmp)


def _marked_as_missing(df: pl.DataFrame, path: str) -> pl.DataFrame:
    """The cells _marked marked: refused in a column that drives addresses, types, scaling or
    limits (a 0 or an empty cell there is silently wrong), missing in free text and extras."""
    for col in df.columns:
        hit = df[col].str.starts_with(_MARK).fill_null(False)
        if not hit.any() and not col.startswith(_MARK):
            continue
        canon = _LOOKUP.get(_norm(col))
        if col.startswith(_MARK) or canon is not None and canon not in _TEXT:
            i = int(hit.arg_true()[0]) if hit.any() else -1
            ref, _, error = (col if i < 0 else df[col][i]).removeprefix(_MARK).partition("\t")
            what = (f"the error value {error}: correct the cell or its formula" if error else
                    "a formula without a computed value (the program that wrote the file did "
                    "not calculate it): type the value, or open and save the file in a "
                    "spreadsheet program")
            raise PointListError(f"cell {ref}: {what}", path=path, row=i + 1 or None,
                                 column=None if i < 0 else col)
        df = df.with_columns(pl.when(hit).then(None).otherwise(pl.col(col)).alias(col))
    return df


def _with_header(df: pl.DataFrame, path: str) -> pl.DataFrame:
    """The first row (read as data) as the header, as written: a header given twice is
    refused, where the readers rename one (ioa_duplicated_0, ioa_1) and a list would use the
    other or keep it under a name nobody wrote; a column without a header is __UNNAMED__<i>
    (fastexcel's name), dropped when it has no values either."""
    if not len(df):
        return df
    names: list[str] = []
    unnamed: set[str] = set()
    for i, h in enumerate(df.row(0)):
        if h is None:
            h = f"__UNNAMED__{i}"
            unnamed.add(h)
        elif h in names:
            raise PointListError(f"header {h!r} twice (columns {names.index(h) + 1} and "
                                 f"{i + 1}): rename or remove one", path=path, column=h)
        names.append(h)
    df = df.slice(1).rename(dict(zip(df.columns, names)))
    return df.select([c for c in names if c not in unnamed or df[c].null_count() < len(df)])


def _read_raw(source: PointListSource, *, sheet: str | int | None, separator: str | None,
              encoding: str | None) -> tuple[pl.DataFrame, str]:
    if isinstance(source, pl.DataFrame):
        return source, "<DataFrame>"
    path = Path(source)
    if not path.exists():
        raise PointListError("no such file", path=path)
    if path.suffix.lower() in (".xlsx", ".xlsm", ".xls", ".ods"):
        # polars reads sheet_id 0 as "every sheet" (a dict of frames): no index below 0
        if not (sheet is None or isinstance(sheet, str)
                or isinstance(sheet, int) and not isinstance(sheet, bool) and sheet >= 0):
            raise PointListError(f"sheet {sheet!r}: a sheet name or an index >= 0", path=path)
        try:
            with _marked(path, sheet) as (readable, marked, name):
                chosen = name or sheet
                kw: dict[str, Any] = ({"sheet_name": chosen} if isinstance(chosen, str)
                                      else {"sheet_id": (chosen or 0) + 1})
                df = pl.read_excel(readable, engine="calamine", infer_schema_length=0,
                                   has_header=False, **kw)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PointListError(f"cannot read the workbook ({msg})", path=path,
                                 column=None) from None
        df = _with_header(df, str(path))
        return (_marked_as_missing(df, str(path)) if marked else df), str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PointListError(f"unreadable ({e.strerror})", path=path) from None
    mixed = False
    try:
        if encoding is not None:
            text = raw.decode(encoding)
        else:
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                # a BOM or UTF-8 characters elsewhere: UTF-8 in part (rows pasted from two
                # sources), which 1252 would read as "ï»¿" or "Â°C": refused
                if raw.startswith(codecs.BOM_UTF8) or _UTF8_CHAR.search(raw):
                    mixed = True
                    raise
                # not UTF-8: Windows' Western code page, a superset of latin-1's printable
                # characters (0x80..0x9F: – € ‰ “ ”, where latin-1 has control characters);
                # a byte it leaves undefined (0x81, 0x8D...) is another code page: refused
                text = raw.decode("cp1252")
    except UnicodeDecodeError as e:
        what = ("UTF-8 throughout, though UTF-8 in part" if mixed
                else encoding or "UTF-8 nor Windows-1252")
        hint = "" if encoding else ": save it as UTF-8, or give its encoding="
        raise PointListError(f"not {what} text ({e.reason} at byte {e.start}){hint}", path=path,
                             row=raw[:e.start].count(b"\n") or None) from None
    except (LookupError, TypeError):
        raise PointListError(f"unknown encoding {encoding!r}", path=path) from None
    if separator is None:
        head = "\n".join(text.splitlines()[:5])
        separator = max([",", ";", "\t", "|"], key=head.count)
    try:
        df = pl.read_csv(io.StringIO(text), separator=separator, infer_schema_length=0,
                         has_header=False, truncate_ragged_lines=False)
    except Exception as e:
        raise PointListError(f"not a readable CSV ({str(e).splitlines()[0]})", path=path) from None
    return _with_header(df, str(path)), str(path)


def _as_text(df: pl.DataFrame, path: str) -> pl.DataFrame:
    """Every column as text (what the checks parse); one of lists, structs or objects (a
    DataFrame's, a hook's rows) is refused, not cast."""
    cols = []
    for name, dtype in df.schema.items():
        try:
            text = None if dtype.is_nested() or dtype == pl.Object else df[name].cast(pl.String)
        except pl.exceptions.PolarsError:   # binary that is not UTF-8, say
            text = None
        if text is None:
            raise PointListError(f"a column of {dtype} values: one text or number per cell",
                                 path=path, column=name)
        cols.append(text)
    return pl.DataFrame(cols) if cols else df


def _parse_type(value: str | None, row: int | None, path: str,
                column: str | None) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    v = str(value).strip()
    if v.lower() in _KIND:
        return _KIND[v.lower()]
    try:
        return int(TypeID.parse(int(float(v)) if re.fullmatch(r"\d+(\.0+)?", v) else v))
    except ValueError:
        raise PointListError(f"unknown type {v!r}", path=path, row=row, column=column) from None


_FAMILIES = {t: family_of(t) for t in range(256)}


def _type_column(df: pl.DataFrame, col: str, n: int, path: str, original: dict[str, str], *,
                 commands: bool = False) -> pl.Series:
    """A type column as type ids, each distinct spelling parsed once (lists repeat a handful
    of types over many rows); the first row of a bad spelling is the one named."""
    if col not in df.columns:
        return pl.Series([None] * n, dtype=pl.Int64)
    values = df[col]
    parsed: dict[str | None, int | None] = {}
    for v in values.unique(maintain_order=True).to_list():
        row = int((values == v).arg_true()[0]) + 1 if v is not None else None
        t = parsed[v] = _parse_type(v, row, path, original.get(col))
        if commands and t is not None and not (45 <= t <= 51 or 58 <= t <= 64):
            raise PointListError(f"{TypeID(t).name} is not a command type", path=path, row=row,
                                 column=original[col])
    return values.replace_strict(parsed, default=None, return_dtype=pl.Int64)


def read_point_list(source: PointListSource, *, sheet: str | int | None = None, separator: str | None = None,
                    encoding: str | None = None, station: int | None = None) -> pl.DataFrame:
    """Read and validate a point list (CSV, XLSX or a DataFrame) into the normalised schema:
    station, ca, ioa, family, type_id, name, description, unit, scale, offset, command_type,
    min, max, then every other column as read."""
    if station is not None and not (isinstance(station, numbers.Integral)
                                    and not isinstance(station, bool) and 0 <= station < 2**32):
        raise PointListError(f"station {station!r}: a station index 0..{2**32 - 1} or None")
    df, path = _read_raw(source, sheet=sheet, separator=separator, encoding=encoding)
    df = _as_text(df, path)
    rename: dict[str, str] = {}
    original: dict[str, str] = {}
    for col in df.columns:
        canon = _LOOKUP.get(_norm(col))
        if canon in original:               # which of the two would be meant?
            raise PointListError(f"a second {canon} column (the first is {original[canon]!r})",
                                 path=path, column=col)
        if canon:
            rename[col] = canon
            original[canon] = col
        elif col in OUT_SCHEMA:             # kept as an extra, it would clash with the output's
            raise PointListError("named like a column of the normalised list: rename it",
                                 path=path, column=col)
    if "ioa" not in rename.values():
        raise PointListError(f"no IOA column (columns seen: {', '.join(df.columns)})",
                             path=path, column="IOA")
    df = df.rename(rename)
    n = len(df)

    def numeric(col: str, lo: float | None = None, hi: float | None = None,
                integer: bool = True) -> pl.Series | None:
        if col not in df.columns:
            return None
        s = df[col].str.strip_chars()
        parsed = s.cast(pl.Float64, strict=False)
        # "nan", "inf" and 1e400 parse too: a scale or limit must be a finite number
        bad = (parsed.is_null() & s.is_not_null() & (s != "")) | ~parsed.is_finite().fill_null(True)
        if integer:
            bad |= parsed.is_not_null() & (parsed != parsed.floor())
        if lo is not None:
            bad |= parsed.is_not_null() & ((parsed < lo) | (parsed > hi))
        if bad.any():
            i = int(bad.arg_true()[0])
            rng = f" in {lo}..{hi}" if lo is not None else ""
            what = "an integer" if integer else "a finite number"
            raise PointListError(f"{s[i]!r} is not {what}{rng}",
                                 path=path, row=i + 1, column=original.get(col, col))
        return parsed

    ioa = numeric("ioa", 0, 16_777_215)
    assert ioa is not None                  # the IOA column was found above
    missing = ioa.is_null()
    if missing.any():
        raise PointListError("IOA is empty", path=path, row=int(missing.arg_true()[0]) + 1,
                             column=original["ioa"])
    ca = numeric("ca", 0, 65535)
    st = numeric("station", 0, 2**32 - 1)
    types = _type_column(df, "type", n, path, original)
    cmds = _type_column(df, "command_type", n, path, original, commands=True)
    scale, offset = numeric("scale", integer=False), numeric("offset", integer=False)
    raw_min, raw_max, eng_min, eng_max = [numeric(c, integer=False)
                                          for c in ("raw_min", "raw_max", "eng_min", "eng_max")]
    if raw_min is not None and raw_max is not None and eng_min is not None and eng_max is not None:
        span = raw_max - raw_min
        lin_scale = (eng_max - eng_min) / span
        lin_offset = eng_min - raw_min * lin_scale
        bad = ~(lin_scale.is_finite() & lin_offset.is_finite()).fill_null(True)
        if bad.any():
            i = int(bad.arg_true()[0])
            why = ("raw_min equals raw_max" if span[i] == 0
                   else "raw_min..raw_max to eng_min..eng_max")
            raise PointListError(f"{why}: the scale or offset is not finite",
                                 path=path, row=i + 1, column=original["raw_max"])
        scale = lin_scale if scale is None else scale.fill_null(lin_scale)
        offset = lin_offset if offset is None else offset.fill_null(lin_offset)
    out = pl.DataFrame({
        "station": (st if st is not None else pl.Series([station] * n, dtype=pl.Float64)),
        "ca": ca if ca is not None else pl.Series([1.0] * n),
        "ioa": ioa,
        "family": types.replace_strict(_FAMILIES, default=None, return_dtype=pl.Int64),
        "type_id": types,
        "name": df["name"] if "name" in df.columns else pl.Series([None] * n, dtype=pl.String),
        "description": df["description"] if "description" in df.columns else pl.Series([None] * n, dtype=pl.String),
        "unit": df["unit"] if "unit" in df.columns else pl.Series([None] * n, dtype=pl.String),
        "scale": scale if scale is not None else pl.Series([None] * n, dtype=pl.Float64),
        "offset": offset if offset is not None else pl.Series([None] * n, dtype=pl.Float64),
        "command_type": cmds,
        "min": numeric("min", integer=False) if "min" in df.columns else pl.Series([None] * n, dtype=pl.Float64),
        "max": numeric("max", integer=False) if "max" in df.columns else pl.Series([None] * n, dtype=pl.Float64),
    }).with_columns(pl.col("ca").fill_null(1)).cast(OUT_SCHEMA)
    inverted = (out["min"] > out["max"]).fill_null(False)
    if inverted.any():                      # every value of the command would be refused
        i = int(inverted.arg_true()[0])
        raise PointListError(f"min {out['min'][i]:g} above max {out['max'][i]:g}", path=path,
                             row=i + 1, column=original["min"])
    extras = [c for c in df.columns if c not in ALIASES]
    out = pl.concat([out, df.select(extras)], how="horizontal") if extras else out
    key = ["station", "ca", "ioa", "family"]
    dup = out.select(key).with_row_index("row").filter(pl.struct(key).is_duplicated())
    if len(dup):
        rows = dup.group_by(key, maintain_order=True).agg(pl.col("row")).row(0, named=True)["row"]
        raise PointListError(f"duplicate point (CA {dup['ca'][0]}, IOA {dup['ioa'][0]}) in rows "
                             f"{rows[0] + 1} and {rows[1] + 1}", path=path, row=rows[1] + 1,
                             column=original["ioa"])
    return out


@dataclass
class ImportStatus:
    """Where an import stands: pending, in_progress (step), completed or failed."""

    state: str = "pending"
    step: str | None = None
    source: str | None = None
    rows: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    started: float | None = None
    finished: float | None = None


class Catalog:
    """The point lists in force (one for all stations and/or one per station), their import
    status, and the tables joined with live values."""

    def __init__(self) -> None:
        self.lists: dict[int | None, pl.DataFrame] = {}
        self.status = ImportStatus()

    def load(self, source: PointListSource, *, station: int | None = None,
             **options: Any) -> pl.DataFrame:
        """Read, validate and put in force now (all or nothing)."""
        self.status = ImportStatus("in_progress", "reading", str(source)[:200], started=time.time())
        try:
            df = read_point_list(source, station=station, **options)
        except Exception as e:
            self.status.state, self.status.error, self.status.finished = "failed", str(e), time.time()
            raise
        self.status.step = "joining"
        self.lists[station] = df
        self.status = ImportStatus("completed", None, self.status.source, rows=len(df),
                                   warnings=self._warnings(df), started=self.status.started,
                                   finished=time.time())
        return df

    async def import_points(self, source: PointListSource | None = None, *,
                            station: int | None = None, hook: str | None = None,
                            timeout: float = 60.0, **options: Any) -> pl.DataFrame:
        """Like :meth:`load`, off the event loop; ``hook=`` runs an import hook instead."""
        if hook is not None:
            from iec104.importhooks import Secret, run_hook
            if "password" in options:           # held as a Secret in every frame from here
                options["password"] = Secret(options["password"])
            self.status = ImportStatus("in_progress", "reading", f"hook {hook}", started=time.time())
            await asyncio.sleep(0)              # let observers see the running state
            hook_args = {k: options.pop(k) for k in ("element", "device", "user", "password")
                         if k in options}
            try:
                source = await run_hook(hook, timeout=timeout, **hook_args)
            except Exception as e:
                self.status.state, self.status.error = "failed", str(e)
                self.status.finished = time.time()
                raise
            options = {}
        if source is None:
            raise PointListError("no point list: give a file, a DataFrame or hook=")
        return await asyncio.to_thread(self.load, source, station=station, **options)

    @staticmethod
    def _warnings(df: pl.DataFrame) -> list[str]:
        w = []
        untyped = df["family"].null_count()
        if untyped:
            w.append(f"{untyped} row(s) without a type: matched to any type at their IOA")
        return w

    def table(self) -> pl.DataFrame:
        """Every list in force, as imported."""
        frames = [df for df in self.lists.values()]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=OUT_SCHEMA)

    def parameters(self, points: pl.DataFrame, now: float | None = None, *,
                   stations: Iterable[int] = ()) -> pl.DataFrame:
        """Live values joined with the lists: status ok / unknown / missing, engineering value,
        readable quality, age. A list for every station applies to the stations of
        ``points`` and to ``stations`` (those connected: one that sent nothing yet shows
        its points as missing)."""
        now = time.time() if now is None else now
        meta = self.table()
        # a list's own column named like a live one or one added here (a "value" of initial
        # values, as the simulator's lists have) is shown as list_<name>: neither joined over
        # nor overwritten
        taken = set(points.columns) | set(_ADDED)
        clash: dict[str, str] = {}
        for c in meta.columns:
            if c in taken and c not in OUT_SCHEMA:
                new = f"list_{c}"
                while new in taken or new in meta.columns:
                    new = f"list_{new}"
                clash[c] = new
                taken.add(new)
        meta = meta.rename(clash)
        live = points.with_columns(pl.lit(True).alias("_live"))
        if len(meta) == 0:
            joined = live.with_columns(pl.lit(None, pl.String).alias("name"),
                                       pl.lit(None, pl.String).alias("description"),
                                       pl.lit(None, pl.String).alias("unit"),
                                       pl.lit(None, pl.Float64).alias("scale"),
                                       pl.lit(None, pl.Float64).alias("offset"),
                                       pl.lit(False).alias("_listed"))
        else:
            meta = meta.with_columns(pl.lit(True).alias("_listed"))
            joined = self._join(live, meta, stations)
        q = pl.col("quality")
        out = joined.with_columns(
            pl.when(pl.col("_live").is_null()).then(pl.lit("missing"))
            .when(pl.col("_listed").is_null() | ~pl.col("_listed")).then(pl.lit("unknown"))
            .otherwise(pl.lit("ok")).alias("status"),
            (pl.col("value") * pl.col("scale").fill_null(1.0) + pl.col("offset").fill_null(0.0))
            .alias("eng_value"),
            *[((q & bit) != 0).alias(name) for name, bit in _QUALITY_BITS],
            (pl.lit(now) - pl.col("recv_time").dt.epoch("ns") / 1e9).alias("age"),
        ).drop([c for c in ("_live", "_listed") if c in joined.columns])
        first = ["station", "ca", "ioa", "name", "type", "value", "eng_value", "unit", "status",
                 "iv", "nt", "sb", "bl", "ov", "time", "age", "description"]
        first = [c for c in first if c in out.columns]
        return out.select(first + [c for c in out.columns if c not in first]).sort(
            ["station", "ca", "ioa"], nulls_last=True)

    def _join(self, live: pl.DataFrame, meta: pl.DataFrame,
              stations: Iterable[int]) -> pl.DataFrame:
        """Full join on (station, CA, IOA, family); list rows without a station match every
        station (of ``live`` or ``stations``), rows without a type match any family at their
        IOA."""
        every = sorted({*live["station"].unique().to_list(), *stations}) or [0]
        any_st = meta.filter(pl.col("station").is_null())
        if len(any_st):
            meta = pl.concat([meta.filter(pl.col("station").is_not_null()),
                              *[any_st.with_columns(pl.lit(s, pl.UInt32).alias("station"))
                                for s in every]], how="vertical_relaxed")
            meta = meta.unique(["station", "ca", "ioa", "family"], keep="first", maintain_order=True)
        typed = meta.filter(pl.col("family").is_not_null())
        untyped = meta.filter(pl.col("family").is_null()).drop(["family", "type_id"])
        meta_cols = [c for c in meta.columns if c not in ("station", "ca", "ioa", "family", "type_id")]
        j = live.join(typed.drop("type_id"), on=["station", "ca", "ioa", "family"], how="full",
                      coalesce=True)
        if len(untyped):
            fill = j.filter(pl.col("_listed").is_null()).drop(meta_cols).join(
                untyped, on=["station", "ca", "ioa"], how="full", coalesce=True)
            j = pl.concat([j.filter(pl.col("_listed").is_not_null()), fill], how="diagonal_relaxed")
        return j

    def command_points(self, learned: list[dict[str, Any]] | None = None) -> pl.DataFrame:
        """IOAs that accept commands: from the lists (command_type) and learned from RTUs."""
        meta = self.table()
        listed = meta.filter(pl.col("command_type").is_not_null()).select(
            "station", "ca", "ioa", pl.col("command_type").alias("type_id"), "name", "unit",
            "min", "max").with_columns(pl.lit("point list").alias("source")) \
            if len(meta) else pl.DataFrame()
        rows = pl.DataFrame(learned or [], schema={"station": pl.UInt32, "ca": pl.UInt16,
                                                   "ioa": pl.UInt32, "type_id": pl.UInt8,
                                                   "last_result": pl.String})
        if len(listed):
            out = listed.join(rows, on=["station", "ca", "ioa", "type_id"], how="full",
                              coalesce=True, nulls_equal=True)
        else:
            out = rows.with_columns(pl.lit("learned").alias("source"))
        names = {int(t): t.name for t in TypeID}
        return out.with_columns(pl.col("type_id").map_elements(names.get, return_dtype=pl.String)
                                .alias("type")).with_columns(
            pl.col("source").fill_null("learned"))

    def check_command(self, station: int, ca: int, ioa: int, type_id: int, *,
                      allow_unlisted: bool = False, value: object = None,
                      select: bool | None = None) -> None:
        """Refuse a command that the list in force does not allow: an IOA outside its command
        table, a type other than the listed command type, a direct execute (``select``
        False) of a point whose ``sbo`` column says select before operate
        (:class:`CommandNotAllowed`), and, when ``value`` is given, a value outside the row's
        ``min``/``max`` (:class:`CommandOutOfLimits`). No list with command points: anything
        goes."""
        if allow_unlisted:
            return
        df = self.lists.get(station)
        if df is None:
            df = self.lists.get(None)
        if df is None or df["command_type"].null_count() == len(df):
            return
        rows = df.filter((pl.col("ca") == ca) & (pl.col("ioa") == ioa)
                         & pl.col("command_type").is_not_null()
                         & (pl.col("station").is_null() | (pl.col("station") == station))
                         ).select("command_type", "name", "min", "max",
                                  pl.col("sbo").cast(pl.String).str.to_lowercase().is_in(SBO_WORDS)
                                  if "sbo" in df.columns else pl.lit(False).alias("sbo")
                                  ).rows(named=True)
        fam = family_of(type_id)
        hit = next((r for r in rows if family_of(r["command_type"]) == fam), None)
        if hit is None:
            listed = ", ".join(sorted({TypeID(r["command_type"]).name for r in rows}))
            raise CommandNotAllowed(
                f"station {station} CA {ca} IOA {ioa}: not a {_type_name(type_id)} command point "
                f"of the point list in force{f' (listed: {listed})' if listed else ''}"
                " (allow_unlisted=True to send anyway)")
        what = f"{hit['name'] or 'the command point'} (CA {ca} IOA {ioa})"
        if select is False and hit["sbo"]:
            raise CommandNotAllowed(f"{what} is select before operate in the point list in "
                                    "force (sbo): send it with select=True")
        if value is None or (hit["min"] is None and hit["max"] is None):
            return
        number = math.nan
        if isinstance(value, numbers.Real):
            try:
                number = float(value)
            except OverflowError:               # an int beyond any float
                number = -math.inf if value < 0 else math.inf
        if math.isnan(number):
            raise CommandOutOfLimits(f"value {value!r} of {what} is not a number to compare "
                                     "with the point list's limits")
        if hit["min"] is not None and number < hit["min"]:
            raise CommandOutOfLimits(f"value {value!r} below min {hit['min']:g} of {what}")
        if hit["max"] is not None and number > hit["max"]:
            raise CommandOutOfLimits(f"value {value!r} above max {hit['max']:g} of {what}")


def _type_name(type_id: int) -> str:
    return TypeID(type_id).name if type_id in TypeID._value2member_map_ else f"type {type_id}"
