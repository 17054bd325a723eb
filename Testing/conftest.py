"""Shared pytest fixtures. Tests run against the source tree (OsteoROI/ on sys.path)."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "OsteoROI"))

#: Real data shared beside the project (never copied into it); tests that need it skip without it.
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
TOTALSEG = os.path.join(SHARED, "data", "totalseg_example")


@pytest.fixture(scope="session")
def totalseg_dir():
    if not os.path.isfile(os.path.join(TOTALSEG, "ct.nii.gz")):
        pytest.skip("../shared/data/totalseg_example is not available")
    return TOTALSEG


@pytest.fixture(scope="session")
def repo_root():
    return ROOT
