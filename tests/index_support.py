"""Shared by tests/test_index*.py: one faiss thread (import the fixture into a test module)."""

from __future__ import annotations

import faiss
import pytest


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """One OpenMP thread: faiss' spinning threads slow down badly on the shared 2-core machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
