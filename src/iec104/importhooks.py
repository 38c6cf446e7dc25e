"""Import hooks: point lists fetched by user code (a Python callable or an executable).

A hook is ``"package.module:function"``, the name of one registered by an installed package
under the entry-point group ``iec104.importers``, or the path of an executable.

A callable is called as ``fn(element=..., request_id=..., device=..., user=..., password=...)``:
``device`` is "ALL" or a CA (as a string), ``user`` a string or None and ``password`` a
:class:`Secret` (``password.reveal()`` gives the text, or None). It returns rows (a list of
dicts), a DataFrame or a file path.

An executable is run as ``hook --element E --request-id ID --device D``; the credentials never
go on its command line (which every local user can read): the password is its standard input
(the text, no newline; empty without one) and the user name the environment variable
``IEC104_USER`` (unset without one). It prints CSV (a header line, then rows) or the path of a
file on standard output and exits with 0; on failure, the first 300 characters of its standard
error say why.

Either may answer ``(request_id, data)``, and then the id must be the request's, so that
answers cannot be mixed up.

The credentials stay out of what a failure shows: the password and the user name are replaced
by ``***`` in the hook's error text and standard error before they reach
:class:`ImportHookError`, the import status or a log, the original exception is not chained,
and the frames that call the hook hold the password only as a :class:`Secret` (pass a
:class:`Secret` yourself to keep it out of your own frames too).
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import io
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, quote_plus

import polars as pl

from iec104.errors import ImportHookError

__all__ = ["Secret", "ImportHookError", "available_hooks", "run_hook"]

GROUP = "iec104.importers"
_cache: dict[str, str] | None = None


class Secret:
    """A password that never shows: not in repr, str, format, logs, exports or a traceback's
    local variables; ``reveal()`` gives the text."""

    __slots__ = ("_value",)

    def __init__(self, value: "str | Secret | None") -> None:
        self._value = value.reveal() if isinstance(value, Secret) else value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return format("***", spec)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not serialised")


def _shown(password: str) -> list[str]:
    """The forms an error may show the password in, longest first (so that none is left in
    part): as is; escaped by repr (KeyError, OSError's filename, !r), with ' escaped or not
    (repr quotes it either way), by ascii, in bytes and in JSON; percent-encoded (a URL)."""
    escaped = [repr(password + '"')[1:-2], ascii(password + '"')[1:-2],
               repr(password.encode() + b'"')[2:-2]]
    forms = {password, *escaped, *(e.replace("\\'", "'") for e in escaped),
             json.dumps(password)[1:-1], json.dumps(password, ensure_ascii=False)[1:-1],
             quote(password, safe=""), quote_plus(password)}
    return sorted(forms, key=len, reverse=True)


def _scrub(text: str, secret: Secret, user: str | None) -> str:
    """text without the password, anywhere and in any of its usual escaped forms, nor the
    user name as a word."""
    password = secret.reveal()
    if password:
        for form in _shown(password):
            text = text.replace(form, "***")
    if user:
        text = re.sub(rf"(?<!\w){re.escape(user)}(?!\w)", "***", text)
    return text


def available_hooks(refresh: bool = False) -> dict[str, str]:
    """{name: "module:function"} of the hooks installed packages register."""
    global _cache
    if _cache is None or refresh:
        eps = importlib.metadata.entry_points(group=GROUP)
        _cache = {ep.name: ep.value for ep in eps}
    return dict(_cache)


def _resolve(hook: str) -> "Callable[..., Any] | Path":
    hooks = available_hooks()
    target = hooks.get(hook, hook)
    if ":" in target and not os.path.exists(target):
        mod, _, fn = target.partition(":")
        try:
            func: Callable[..., Any] = getattr(importlib.import_module(mod), fn)
            return func
        except (ImportError, AttributeError) as e:
            raise ImportHookError(f"import hook {hook!r}: cannot load {target} ({e})") from None
    path = Path(target)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise ImportHookError(f"no import hook {hook!r} (installed: {', '.join(sorted(hooks)) or 'none'})")


def _match(result: object, request_id: str, hook: str) -> pl.DataFrame | Path:
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


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        if sys.platform == "win32":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)     # its own session: the group is its own
    except ProcessLookupError:
        pass


async def _run_executable(path: Path, args: list[str], secret: Secret, user: str | None,
                          hook: str) -> pl.DataFrame | Path:
    env = {k: v for k, v in os.environ.items() if k != "IEC104_USER"}
    if user:
        env["IEC104_USER"] = user
    proc = await asyncio.create_subprocess_exec(
        str(path), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, start_new_session=sys.platform != "win32")
    try:
        # written here rather than through communicate(input=...), whose frames would hold it
        stdin = proc.stdin
        assert stdin is not None                # stdin=PIPE
        # a hook that exited at once may have closed its end already (uvloop refuses a write)
        if not stdin.is_closing():
            stdin.write((secret.reveal() or "").encode())
            try:
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass                            # the hook did not read it
        stdin.close()
        out, err = await proc.communicate()
    except asyncio.CancelledError:             # timed out or cancelled: the hook and its children
        _kill(proc)
        await proc.wait()
        raise
    if proc.returncode != 0:
        why = _scrub(err.decode(errors="replace").strip(), secret, user)[:300]
        raise ImportHookError(f"import hook {hook!r} exited with {proc.returncode}: {why}")
    text = out.decode(errors="replace").strip()
    if "\n" not in text and Path(text).exists():
        return Path(text)
    return pl.read_csv(io.StringIO(text), infer_schema_length=0)


async def run_hook(hook: str, *, element: str = "", device: str | int = "ALL",
                   user: str | None = None, password: "Secret | str | None" = None,
                   timeout: float = 60.0,
                   request_id: str | None = None) -> pl.DataFrame | Path:
    """Run a hook and return its point list (a DataFrame or a file path).

    ``password`` is best given as a :class:`Secret`; a string is wrapped at once. A failure is
    an :class:`ImportHookError` whose text names neither the password nor the user.
    """
    password = Secret(password)                 # from here on, no frame holds the text
    request_id = request_id or str(uuid.uuid4())
    try:
        fn = _resolve(hook)
        if isinstance(fn, Path):
            args = ["--element", element, "--request-id", request_id, "--device", str(device)]
            result = await asyncio.wait_for(_run_executable(fn, args, password, user, hook),
                                            timeout)
        else:
            call = asyncio.to_thread(fn, element=element, request_id=request_id,
                                     device=str(device), user=user, password=password)
            result = await asyncio.wait_for(call, timeout)
        return _match(result, request_id, hook)
    except asyncio.TimeoutError:
        failure = f"import hook {hook!r} did not answer within {timeout:g} s"
    except ImportHookError as e:
        failure = str(e)
    except Exception as e:
        failure = f"import hook {hook!r} failed: {type(e).__name__}: {e}"
    # every message scrubbed (the hook's name too), in place: this frame's locals show in a
    # traceback; raised out here, not in the except clauses: the hook's exception (its message,
    # its frames' local variables) is not chained to this one
    failure = _scrub(failure, password, user)
    raise ImportHookError(failure)
