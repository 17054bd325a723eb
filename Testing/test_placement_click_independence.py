"""The click only says which vertebra: clicks anywhere in the middle of the same body give the same
placement (QCT_BRIEF §1: the mid-vertebral section is a property of the body, not of the click).

Real CTs from ../shared/data (skipped when absent): the 3 mm TotalSegmentator example, the 1.5 mm
TPTBox crop, and the 3 mm CT re-binned to 6 mm (the benchmark corpus's thick-slice case). Clicks are
drawn from each body's model-made label (an independent reference), ±3 mm in-plane about its centre
and anywhere in the middle 60 % of its height along the slice axis.
"""
import os
import sys

import numpy as np
import pytest

import SimpleITK as sitk

from OsteoROILib.io.image_files import read_volume
from OsteoROILib.placement.click import place_from_click
from OsteoROILib.placement.measure import measure_levels

from conftest import read_tptbox

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
import placement_corpus  # noqa: E402

#: TPTBox sample (its README): vertebra labels 21 = L2, 22 = L3, 23 = L4; subregion 50 = the body.
#: Only L3 lies wholly inside the crop.
TPTBOX_WHOLE_BODIES = {"L3": 22}
TOTALSEG_BODIES = {"L1": 20, "L2": 21, "L3": 22, "L4": 23}


def _clicks(volume, body_mask, n, seed):
    """``n`` clicks: ±3 mm in-plane about the label's centre, anywhere in its middle 60 % height."""
    rng = np.random.default_rng(seed)
    ras = volume.ijk_to_ras_points(np.argwhere(body_mask)[:, ::-1].astype(float))
    nrm = volume.slice_normal_ras()
    u = volume.in_plane_anterior()
    v = np.cross(nrm, u)
    h = ras @ nrm
    c = ras.mean(axis=0)
    heights = h.min() + (h.max() - h.min()) * rng.uniform(0.2, 0.8, n)
    return [c + rng.uniform(-3, 3) * u + rng.uniform(-3, 3) * v + (z - c @ nrm) * nrm for z in heights]


def _same(a, b):
    assert a.slice_index == b.slice_index
    np.testing.assert_allclose(a.outline.center, b.outline.center, atol=1e-9)
    np.testing.assert_allclose(a.outline.ap_axis, b.outline.ap_axis, atol=1e-9)
    np.testing.assert_allclose(a.outline.inner_contour, b.outline.inner_contour, atol=1e-9)


def _label_mid_slice(volume, mask):
    ks = np.argwhere(mask)[:, 2 - volume.slice_axis()]
    return 0.5 * (ks.min() + ks.max())


def test_totalseg_clicks_anywhere_in_the_body_give_one_placement(totalseg_dir):
    volume = read_volume(f"{totalseg_dir}/ct.nii.gz")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(f"{totalseg_dir}/vertebral_bodies.nii.gz"))
    for i, (level, value) in enumerate(TOTALSEG_BODIES.items()):
        mask = labels == value
        placed = [place_from_click(volume, p, level) for p in _clicks(volume, mask, 6, seed=i)]
        for pl in placed[1:]:
            _same(placed[0], pl)
        # the chosen slice is the label's mid-height (independent reference) within one slice
        assert abs(placed[0].slice_index - _label_mid_slice(volume, mask)) <= 1.0, level


@pytest.fixture(scope="module")
def tptbox():
    volume, vert, sub = read_tptbox()
    return volume, {lv: (vert == k) & (sub == 50) for lv, k in TPTBOX_WHOLE_BODIES.items()}


def test_tptbox_clicks_anywhere_in_l3_give_one_placement_and_one_mean(tptbox):
    """L3's mid-height lies half way between two 1.5 mm slices on this crop: the choice must not
    flip with the click, and the row says which slice was taken and why."""
    volume, bodies = tptbox
    mask = bodies["L3"]
    clicks = _clicks(volume, mask, 8, seed=7)
    placed = [place_from_click(volume, p, "L3") for p in clicks]
    for pl in placed[1:]:
        _same(placed[0], pl)
    assert abs(placed[0].slice_index - _label_mid_slice(volume, mask)) <= 1.0
    auto = placed[0].to_dict()
    assert "mid_height_offset_slices" in auto and str(placed[0].slice_index) in auto["mid_slice_rule"]
    means = {tuple(np.round(p, 3)): measure_levels(volume, {"L3": p})["rows"][0]["mean_hu"] for p in clicks[:3]}
    assert len(set(means.values())) == 1, means


def test_totalseg_clicks_near_the_discs_never_place_a_disc(totalseg_dir):
    """Clicks on the body's axis from 3 mm beyond each endplate of the label to the other: each is
    refused or placed on a slice inside the middle of some body label (never on a disc, whose
    slices no body label covers); a click inside the label's middle 60 % goes to that body."""
    from OsteoROILib.errors import PlacementError

    volume = read_volume(f"{totalseg_dir}/ct.nii.gz")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(f"{totalseg_dir}/vertebral_bodies.nii.gz"))
    axis = 2 - volume.slice_axis()
    middles = {}
    for level, value in TOTALSEG_BODIES.items():
        ks = np.flatnonzero(np.any(np.moveaxis(labels == value, axis, 0), axis=(1, 2)))
        lo, hi = ks.min(), ks.max()
        middles[level] = (lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo))
    nrm = volume.slice_normal_ras()
    for level, value in TOTALSEG_BODIES.items():
        kji = np.argwhere(labels == value)
        centre = volume.ijk_to_ras_points(kji.mean(axis=0)[::-1])[0]
        k_c = kji.mean(axis=0)[0]
        ds = volume.slice_spacing()
        for k in np.arange(kji[:, 0].min() - 1, kji[:, 0].max() + 2):
            click = centre + (k - k_c) * ds * nrm * np.sign(volume.direction[2, volume.slice_axis()])
            try:
                pl = place_from_click(volume, click, level)
            except PlacementError:
                continue
            inside = [lv for lv, (a, b) in middles.items() if a - 0.5 <= pl.slice_index <= b + 0.5]
            assert inside, (level, k, pl.slice_index)
            a, b = middles[level]
            if a <= k <= b:
                assert inside == [level], (level, k, pl.slice_index)


@pytest.fixture(scope="module")
def totalseg_6mm(totalseg_dir):
    volume = read_volume(f"{totalseg_dir}/ct.nii.gz")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(f"{totalseg_dir}/vertebral_bodies.nii.gz"))
    # the benchmark corpus's 6 mm case: each pair of 3 mm slices averaged, the labels merged alike
    return placement_corpus.rebinned_pairs(volume, labels)


@pytest.mark.parametrize("level", ["L1", "L2", "L3"])
def test_6mm_slices_twenty_clicks_in_the_body_give_one_plane(totalseg_6mm, level):
    """At 6 mm slices a 25 mm body spans about four slices and a click in its middle 60 % can lie on
    the slice that holds an endplate: still every click is placed (none refused) on one plane with one
    outline, on the label's mid slice within one slice (the label is the independent reference)."""
    volume, labels = totalseg_6mm
    mask = labels == TOTALSEG_BODIES[level]
    placed = [place_from_click(volume, p, level) for p in _clicks(volume, mask, 20, seed=31)]
    for pl in placed[1:]:
        _same(placed[0], pl)
    assert abs(placed[0].slice_index - _label_mid_slice(volume, mask)) <= 1.0


def test_6mm_slices_no_disc_inside_a_body(totalseg_6mm):
    """At 6 mm the L2 superior endplate shows no peak of its own in the central profile (it blurs into
    the body), only the L1 inferior endplate across the disc does: the body must still end below the
    L1/L2 disc, i.e. below the lowest point of the L1 label (the independent reference), and not
    take the disc in (a disc is never a body)."""
    volume, labels = totalseg_6mm
    nrm = volume.slice_normal_ras()
    l1 = volume.ijk_to_ras_points(np.argwhere(labels == TOTALSEG_BODIES["L1"])[:, ::-1].astype(float)) @ nrm
    mask = labels == TOTALSEG_BODIES["L2"]
    pl = place_from_click(volume, volume.ijk_to_ras_points(np.argwhere(mask).mean(axis=0)[::-1])[0], "L2")
    assert max(pl.endplates_s) < l1.min()


def test_6mm_slices_the_row_records_the_slices_between_the_endplates_and_warns(totalseg_6mm, totalseg_dir):
    """The endplates of L1 lie about 21 mm apart (QCT_BRIEF §7's peer report: 22–24 mm middle
    heights), under four 6 mm slices: the row records the count and carries the thick-slice caveat;
    on the 3 mm original (seven slices) it does not."""
    volume, labels = totalseg_6mm
    mask = labels == TOTALSEG_BODIES["L1"]
    click = volume.ijk_to_ras_points(np.argwhere(mask).mean(axis=0)[::-1])[0]
    res = measure_levels(volume, {"L1": click})
    row = res["rows"][0]
    assert 3.0 <= row["slices_between_endplates"] < 4.0
    assert any("thick slices" in w and "6 mm slices" in w for w in row["warnings"])
    original = read_volume(f"{totalseg_dir}/ct.nii.gz")
    row3 = measure_levels(original, {"L1": click})["rows"][0]
    assert row3["slices_between_endplates"] >= 6.0
    assert not any("thick slices" in w for w in row3["warnings"])
