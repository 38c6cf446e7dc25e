"""Every async test runs on plain asyncio and on uvloop (the loop the CLI uses)."""
import asyncio
import sys
import threading
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


# The files that take longest, longest first (the sum of their tests' durations in one run of
# make test, 4 workers, 2 cores, measured 2026-12-02). make test hands out single
# tests (--dist loadgroup, below), in this order (--no-loadscope-reorder keeps it): the two
# files that run whole on one worker (ONE_WORKER) first, so that their 10-12 s chains start at
# once, then the long files' tests, then the short ones, which fill the workers' ends (with
# whole files, loadfile, the workers ended up to 3.6 s apart; with single tests, within 2 s).
# Files not listed follow in their own order; within a file the order is unchanged.
LONGEST_FIRST = [
    "test_cluster.py",              # 10-12 s, one worker: Ray's start (4-5 s of it)
    "test_tui.py",                  # 10 s, one worker: most of it CPU (Textual)
    "test_cli.py",                  # 6 s, subprocesses
    "test_redundancy.py",           # 6 s, timers
    "test_outstation_safety.py",    # 6 s, c104 clients
    "test_session_safety.py",
    "test_import_secrets.py",
    "test_store.py",
    "test_tls.py",
    "test_master_c104.py",
    "test_packaging.py",
    "test_ca.py",
    "test_session_faults.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# make test hands out single tests (--dist loadgroup), so that a file's tests spread over the
# workers, except for these files: each runs whole on one worker, its module-scoped fixture
# started once (they hold the suite's only module-scoped fixtures). xdist's own grouping (the
# marker xdist_group, which renames the test ids) does nothing under pytest 9 (xdist 3.8 sets
# item._nodeid, which pytest 9 no longer reads: the Ray cluster started on all 4 workers),
# hence this scheduler; a test marked xdist_group is still grouped if xdist gets fixed.
ONE_WORKER = {
    "test_cluster.py",      # the Ray cluster (4-5 s to start); the tests run in order, the kill last
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


def pytest_sessionfinish(session):
    # tests/test_cluster.py stops Ray in a thread beside the next tests; a process that ends
    # while it runs is ended by Ray's core worker, with exit code 1 and no summary (seen with
    # the file run on its own)
    for t in threading.enumerate():
        if t.name == "ray-shutdown":
            t.join(60)
