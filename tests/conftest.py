"""Shared test setup: tests run on 2 CPU cores, keep torch to one thread per process; the
synthetic-data cache of commands run without --data-root is a temporary folder, never the
user's ~/.cache/edge-mtl."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("edge-mtl-cache")


@pytest.fixture(autouse=True)
def _edge_mtl_cache(_session_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$EDGE_MTL_CACHE`` for every test (and the processes it starts): one folder for the
    session, so scenes rendered by one test are reused by the next, as in a user's cache."""
    monkeypatch.setenv("EDGE_MTL_CACHE", str(_session_cache))
