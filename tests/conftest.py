"""Every async test runs on plain asyncio and on uvloop (the loop the CLI uses)."""
import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # conformance, scripted_peer, c104_peer


@pytest.fixture(scope="session", params=["asyncio", "uvloop"])
def event_loop_policy(request):
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()
