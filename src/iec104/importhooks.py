"""Import hooks: point lists fetched by user code (a Python callable or an executable).

A hook is ``"package.module:function"``, the name of one registered by an installed package
under the entry-point group ``iec104.importers``, or the path of an executable. It is called
with the element name, a unique request id, the device ("ALL" or a CA) and optional user and
password, and returns rows (a list of dicts), a DataFrame or a file path; an executable gets
the password on stdin (never in argv) and prints CSV or a path. The answer must carry the
request id when it says one (``(request_id, data)``), so that answers cannot be mixed up.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import io
import os
import uuid
from pathlib import Path

import polars as pl

from iec104.errors import IEC104Error

__all__ = ["Secret", "ImportHookError", "available_hooks", "run_hook"]

GROUP = "iec104.importers"
_cache: dict[str, str] | None = None


class ImportHookError(IEC104Error):
    """A hook that does not exist, failed, timed out or answered another request."""


class Secret:
    """A password that never shows: not in repr, str, logs or exports."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None):
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret is not serialised")


def available_hooks(refresh: bool = False) -> dict[str, str]:
    """{name: "module:function"} of the hooks installed packages register."""
    global _cache
    if _cache is None or refresh:
        eps = importlib.metadata.entry_points(group=GROUP)
        _cache = {ep.name: ep.value for ep in eps}
    return dict(_cache)


def _resolve(hook: str):
    hooks = available_hooks()
    target = hooks.get(hook, hook)
    if ":" in target and not os.path.exists(target):
        mod, _, fn = target.partition(":")
        try:
            return getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise ImportHookError(f"import hook {hook!r}: cannot load {target} ({e})") from None
    path = Path(target)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise ImportHookError(f"no import hook {hook!r} (installed: {', '.join(sorted(hooks)) or 'none'})")


def _match(result, request_id: str, hook: str):
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str):
        if result[0] != request_id:
            raise ImportHookError(f"import hook {hook!r} answered request {result[0]}, "
                                  f"not {request_id}")
        result = result[1]
    if isinstance(result, pl.DataFrame):
        return result
    if isinstance(result, (str, Path)) and Path(result).exists():
        return Path(result)
    if isinstance(result, list):
        return pl.DataFrame(result, infer_schema_length=None)
    raise ImportHookError(f"import hook {hook!r} returned {type(result).__name__}: expected "
                          "rows, a DataFrame or a file path")


async def _run_executable(path: Path, args: list[str], password: str | None, hook: str):
    proc = await asyncio.create_subprocess_exec(
        str(path), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await proc.communicate((password or "").encode())
    except asyncio.CancelledError:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise ImportHookError(f"import hook {hook!r} exited with {proc.returncode}: "
                              f"{err.decode(errors='replace').strip()[:300]}")
    text = out.decode(errors="replace").strip()
    if "\n" not in text and Path(text).exists():
        return Path(text)
    return pl.read_csv(io.StringIO(text), infer_schema_length=0)


async def run_hook(hook: str, *, element: str = "", device: str | int = "ALL",
                   user: str | None = None, password=None, timeout: float = 60.0,
                   request_id: str | None = None):
    """Run a hook and return its point list (a DataFrame or a file path)."""
    request_id = request_id or str(uuid.uuid4())
    secret = password if isinstance(password, Secret) else Secret(password)
    fn = _resolve(hook)
    try:
        if isinstance(fn, Path):
            args = ["--element", element, "--request-id", request_id, "--device", str(device)]
            if user:
                args += ["--user", user]
            result = await asyncio.wait_for(_run_executable(fn, args, secret.reveal(), hook), timeout)
        else:
            call = asyncio.to_thread(fn, element=element, request_id=request_id,
                                     device=str(device), user=user, password=secret)
            result = await asyncio.wait_for(call, timeout)
    except asyncio.TimeoutError:
        raise ImportHookError(f"import hook {hook!r} did not answer within {timeout:g} s") from None
    except ImportHookError:
        raise
    except Exception as e:
        raise ImportHookError(f"import hook {hook!r} failed: {type(e).__name__}: {e}") from None
    return _match(result, request_id, hook)
