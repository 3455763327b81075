"""Shared test setup: tests run on 2 CPU cores, keep torch to one thread per process."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
