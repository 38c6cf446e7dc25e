"""Import hooks and credentials: the password (and the user name) never reach argv, errors,
the import status, logs or a traceback rendered with its local variables."""
import io
import logging
import os
import sys
import traceback
from pathlib import Path

import pytest

from iec104.importhooks import ImportHookError, Secret, run_hook
from iec104.metadata import Catalog

PASSWORD = "Zq9-hunter2-Xy"          # distinctive: any leak of it (or of a piece of it) shows
USER = "operator7"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell hooks")


def leaks(text: str, *, user: bool = True) -> list[str]:
    """The credentials (or the password's first 5 characters, a truncated leak) found in text.
    The user name is kept out of argv, error text, status and logs, but it is no secret in a
    traceback's local variables (the callers hold it as a plain string)."""
    return [s for s in (PASSWORD, PASSWORD[:5]) + ((USER,) if user else ()) if s in text]


def rendered(exc: BaseException) -> str:
    """Every exception reachable from exc (causes and contexts, suppressed or not), rendered
    with the local variables of every frame, by the standard library and by rich."""
    parts, seen, todo = [], set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts.append("".join(traceback.TracebackException.from_exception(
            e, capture_locals=True).format()))
        parts.append(repr(e.args))
        todo += [e.__cause__, e.__context__]
    try:
        from rich.console import Console
        from rich.traceback import Traceback
    except ImportError:
        return "\n".join(parts)
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(Traceback.from_exception(type(exc), exc, exc.__traceback__, show_locals=True))
    return "\n".join(parts) + console.export_text()


def leaking_hook(*, element, request_id, device, user, password):
    token = password.reveal()            # a local of the hook's frame, as user code does
    raise PermissionError(f"login {user}:{token} refused by the ERP")


def leaking_answer_hook(*, element, request_id, device, user, password):
    return password.reveal(), []         # "answers" a request named after the password


def executable(tmp_path, body: str):
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


# ---- error text and status -------------------------------------------------------------------

async def test_a_callable_hook_raising_with_the_password_does_not_leak_it(caplog):
    caplog.set_level(logging.DEBUG)
    cat = Catalog()
    with pytest.raises(ImportHookError) as ei:
        await cat.import_points(hook=f"{__name__}:leaking_hook", user=USER,
                                password=Secret(PASSWORD))
    msg = str(ei.value)
    assert "PermissionError" in msg and "refused by the ERP" in msg      # still says why
    assert leaks(msg) == [] and leaks(str(cat.status.error)) == [] and leaks(repr(cat.status)) == []
    assert cat.status.state == "failed"
    assert leaks(caplog.text) == []
    assert leaks(rendered(ei.value), user=False) == []


async def test_an_answer_naming_the_password_does_not_leak_it():
    with pytest.raises(ImportHookError, match="answered request") as ei:
        await run_hook(f"{__name__}:leaking_answer_hook", password=PASSWORD)
    assert leaks(str(ei.value)) == []


async def test_an_executable_hook_echoing_stdin_and_env_to_stderr_does_not_leak(tmp_path):
    hook = executable(tmp_path, 'read pw\necho "stdin: $pw" >&2\nenv >&2\nexit 3\n')
    cat = Catalog()
    with pytest.raises(ImportHookError, match="exited with 3") as ei:
        await cat.import_points(hook=hook, user=USER, password=Secret(PASSWORD))
    msg = str(ei.value)
    assert "stdin: ***" in msg                              # scrubbed, not dropped
    assert leaks(msg) == [] and leaks(str(cat.status.error)) == []
    assert leaks(rendered(ei.value), user=False) == []


async def test_a_password_at_the_truncation_limit_is_not_half_shown(tmp_path):
    # stderr is cut at 300 characters: the password must be scrubbed before the cut
    hook = executable(tmp_path, f'read pw\nprintf "%0{300 - 6}d$pw" 0 >&2\nexit 1\n')
    with pytest.raises(ImportHookError) as ei:
        await run_hook(hook, password=Secret(PASSWORD))
    assert leaks(str(ei.value)) == []


async def test_a_timed_out_executable_hook_leaves_no_password_in_the_traceback(tmp_path):
    hook = executable(tmp_path, "sleep 5\n")
    cat = Catalog()
    with pytest.raises(ImportHookError, match="did not answer") as ei:
        await cat.import_points(hook=hook, user=USER, password=Secret(PASSWORD), timeout=0.3)
    assert leaks(rendered(ei.value), user=False) == []


async def test_a_plain_string_password_is_held_as_a_secret_by_run_hook(tmp_path):
    # the caller's own frames are the caller's business; run_hook's frames hold a Secret
    hook = executable(tmp_path, 'read pw\necho "$pw" >&2\nexit 1\n')
    with pytest.raises(ImportHookError) as ei:
        await run_hook(hook, user=USER, password="Zq9-" + "hunter2-Xy")
    assert leaks(rendered(ei.value), user=False) == []


# ---- argv and the hook's interface -----------------------------------------------------------

async def test_neither_password_nor_user_is_in_the_hook_argv(tmp_path):
    seen = tmp_path / "seen"
    hook = executable(tmp_path, f"""read pw
tr '\\0' ' ' < /proc/$$/cmdline > {seen}.cmdline 2>/dev/null || echo "$0 $*" > {seen}.cmdline
echo "$0 $*" > {seen}.argv
echo "ioa,name,user"
echo "1,$pw,$IEC104_USER"
""")
    df = await run_hook(hook, element="E1", device=3, user=USER, password=Secret(PASSWORD))
    assert df.row(0, named=True) == {"ioa": "1", "name": PASSWORD, "user": USER}   # delivered
    for f in (f"{seen}.cmdline", f"{seen}.argv"):
        argv = Path(f).read_text()
        assert "--request-id" in argv and "--element E1" in argv and "--device 3" in argv
        assert leaks(argv) == [], argv


async def test_without_a_user_the_hook_sees_no_user_even_if_the_parent_has_one(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("IEC104_USER", "someone-else")
    hook = executable(tmp_path, 'echo "ioa,user"\necho "1,${IEC104_USER:-none}"\n')
    df = await run_hook(hook)
    assert df["user"].to_list() == ["none"]


async def test_a_hook_that_exits_without_reading_its_stdin_is_no_failure(tmp_path):
    # it closes stdin and answers at once: the password is not written to a closed pipe
    # (uvloop raised "the handler is closed" there, in about one run of six)
    hook = executable(tmp_path, 'exec 0<&-\necho "ioa,name"\necho "1,x"\n')
    for _ in range(30):
        df = await run_hook(hook, password=Secret(PASSWORD))
        assert df["name"].to_list() == ["x"]


def test_secret_is_redacted_and_revealed_only_on_request():
    s = Secret(PASSWORD)
    assert str(s) == "***" and f"{s}" == "***" and PASSWORD not in repr(s)
    assert s.reveal() == PASSWORD
    assert Secret(s).reveal() == PASSWORD                   # wrapping twice is harmless


def escaping_hook(*, element, request_id, device, user, password):
    raise KeyError(password.reveal())               # str(KeyError) is the repr of its key


def percent_hook(*, element, request_id, device, user, password):
    from urllib.parse import quote
    raise ConnectionError(f"https://erp/login?pw={quote(password.reveal(), safe='')} refused")


@pytest.mark.parametrize("password", ["Zq9\\hunter2-Xy", "Zq9'hunter2\"Xy", "Zq9\thunter2-Xy",
                                      "Zq9/hunter2 Xy&", "Zq9ähunter2-Xy"])
@pytest.mark.parametrize("hook", ["escaping_hook", "percent_hook"])
async def test_a_password_shown_escaped_in_a_hook_error_is_scrubbed(password, hook):
    """The password is scrubbed in the forms exceptions usually show it in, too: escaped by
    repr (KeyError, OSError's filename, f"{pw!r}": a backslash, mixed quotes, a tab),
    ascii or JSON, and percent-encoded in a URL; none reaches ImportHookError in clear."""
    with pytest.raises(ImportHookError) as ei:
        await run_hook(f"{__name__}:{hook}", password=Secret(password))
    assert "hunter2" not in str(ei.value), str(ei.value)
    assert "***" in str(ei.value)
