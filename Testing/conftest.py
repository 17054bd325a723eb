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
TPTBOX = os.path.join(SHARED, "data", "tptbox_sample")


@pytest.fixture(scope="session")
def totalseg_dir():
    if not os.path.isfile(os.path.join(TOTALSEG, "ct.nii.gz")):
        pytest.skip("../shared/data/totalseg_example is not available")
    return TOTALSEG


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


def read_tptbox():
    """The real TPTBox crop, read afresh (a test may add caveats to its volume): the CT as a
    ``Volume``, its vertebra labels (21–23 = L2–L4) and subregion labels (50 = the body) as arrays
    [k, j, i]; the calling test is skipped when ../shared/data/tptbox_sample is absent."""
    ct = os.path.join(TPTBOX, "sub-ct_label-22_ct.nii.gz")
    if not os.path.isfile(ct):
        pytest.skip("../shared/data/tptbox_sample is not available")
    import SimpleITK as sitk

    from OsteoROILib.io.image_files import read_volume

    vert = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TPTBOX, "sub-ct_seg-vert_label-22_msk.nii.gz")))
    sub = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TPTBOX, "sub-ct_seg-subreg_label-22_msk.nii.gz")))
    return read_volume(ct), vert, sub
