"""Every async test runs on plain asyncio and on uvloop (the loop the CLI uses)."""
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))   # conformance, scripted_peer, c104_peer


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    return factories


# The files that take longest, longest first (seconds of one run with make test's 4 workers,
# measured 2026-12): make test hands out whole files (--dist loadfile, --no-loadscope-reorder
# keeps this order), and a long file started last is the suite's tail (test_tui, last in
# alphabetical order, started after 20 s and ran 15 s more). Files not listed follow in
# their own order; within a file the order is unchanged.
LONGEST_FIRST = [
    "test_cluster.py",              # 16 s: Ray's start
    "test_tui.py",                  # 15 s of CPU: Textual
    "test_session_safety.py",       # 10 s
    "test_redundancy.py",           # 9 s, timers
    "test_cli.py",                  # 8 s, subprocesses
    "test_outstation_safety.py",
    "test_tls.py",
    "test_outstation.py",
    "test_packaging.py",
    "test_ca.py",
    "test_session_faults.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# make test hands out single tests (--dist loadgroup), so the files' tests spread over the
# workers, except for these files: each runs whole on one worker, its module-scoped fixture
# started once (the only module-scoped fixtures of the suite). xdist's own grouping (marker
# xdist_group, which renames the test ids) does nothing under pytest 9 (xdist 3.8 sets
# item._nodeid, which pytest 9 no longer reads), hence this scheduler.
ONE_WORKER = {
    "test_cluster.py",      # the Ray cluster (7 s to start); the tests run in order, the kill last
    "test_tui.py",          # the app and simulator the pages' tests share
}


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ByTest(LoadGroupScheduling):
        def _split_scope(self, nodeid):
            file = nodeid.split("::", 1)[0]
            if file.rsplit("/", 1)[-1] in ONE_WORKER:
                return file
            return super()._split_scope(nodeid)     # the test, or its xdist_group

    return ByTest(config, log)
