"""The AP axis from the body, the spinal canal and the posterior elements (placement.ap_axis).

Oracles: the digital phantom's configured axial rotation (its body, canal and posterior elements
turn together about the body's centre), and on the real CTs the direction from the posterior
elements' centroid to the body's centroid computed from TotalSegmentator's / TPTBox's labels (made
by models, not by this code): whole-vertebra label minus vertebral-body label, over the body's height.
"""
import os

import numpy as np
import pytest

import SimpleITK as sitk

from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.io.image_files import read_volume
from OsteoROILib.placement.ap_axis import combined_ap_axis, posterior_direction
from OsteoROILib.placement.click import place_from_click

from conftest import read_tptbox

ROTATIONS = (0.0, 20.0, -15.0, 8.0)


def _in_plane_angle(a, b, normal):
    n = np.asarray(normal, float)
    a, b = (np.asarray(x, float) - n * float(np.dot(x, n)) for x in (a, b))
    cos = abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _turn(axis, normal, deg):
    """``axis`` turned by ``deg`` about ``normal`` (Rodrigues)."""
    n = np.asarray(normal, float)
    r = np.radians(deg)
    return axis * np.cos(r) + np.cross(n, axis) * np.sin(r) + n * float(n @ axis) * (1 - np.cos(r))


def _true_outline(lv):
    """The phantom's body outline (its configured superellipse) as RAS points."""
    th = np.linspace(0, 2 * np.pi, 144, endpoint=False)
    p = lv.body_exponent
    c, s = np.cos(th), np.sin(th)
    x = 0.5 * lv.depth_mm * np.sign(c) * np.abs(c) ** (2.0 / p)
    y = 0.5 * lv.width_mm * np.sign(s) * np.abs(s) ** (2.0 / p)
    return (np.asarray(lv.center_ras) + np.outer(x, lv.ap_axis_ras) + np.outer(y, lv.left_axis_ras))


@pytest.fixture(scope="module")
def rotated():
    return make_phantom(rotation_deg=ROTATIONS)


@pytest.mark.parametrize("name", ["L1", "L2", "L3", "L4"])
def test_posterior_elements_give_the_rotated_axis_from_a_wrong_start(rotated, name):
    volume, truth = rotated
    lv = truth.level(name)
    nrm = volume.slice_normal_ras()
    for start_error in (-10.0, 10.0):
        ap0 = _turn(np.asarray(lv.ap_axis_ras, float), nrm, start_error)
        axis, lever, confidence = posterior_direction(volume, nrm, volume.in_plane_anterior(), lv.center_ras, _true_outline(lv),
                                                      lv.depth_mm, ap0)
        assert _in_plane_angle(axis, lv.ap_axis_ras, nrm) <= 1.5
        assert lever > 0.5 * lv.depth_mm and confidence > 0.5


@pytest.mark.parametrize("name", ["L1", "L2", "L3", "L4"])
def test_click_placement_axis_follows_the_rotation(rotated, name):
    volume, truth = rotated
    lv = truth.level(name)
    pl = place_from_click(volume, np.asarray(lv.center_ras) + np.array([3.0, -2.0, 4.0]), name)
    assert _in_plane_angle(pl.outline.ap_axis, lv.ap_axis_ras, volume.slice_normal_ras()) <= 1.5


def test_without_posterior_bone_the_first_axis_is_kept():
    # posterior elements as soft tissue: nothing behind the body to weigh, the first axis stands
    volume, truth = make_phantom(rotation_deg=ROTATIONS, posterior_hu=40.0)
    lv = truth.level("L2")
    nrm = volume.slice_normal_ras()
    ap0 = _turn(np.asarray(lv.ap_axis_ras, float), nrm, 5.0)
    post = posterior_direction(volume, nrm, volume.in_plane_anterior(), lv.center_ras, _true_outline(lv),
                               lv.depth_mm, ap0)
    assert post is None or post[2] < 0.05
    axis = combined_ap_axis(volume, nrm, volume.in_plane_anterior(), lv.center_ras, _true_outline(lv), lv.depth_mm,
                            ap0, 20.0)
    assert _in_plane_angle(axis, ap0, nrm) <= 0.5


def _posterior_reference(volume, body, whole):
    """Body centroid minus the centroid of (whole vertebra − body) over the body's height, in-plane."""
    nrm = volume.slice_normal_ras()
    rb = volume.ijk_to_ras_points(np.argwhere(body)[:, ::-1].astype(float))
    rp = volume.ijk_to_ras_points(np.argwhere(whole & ~body)[:, ::-1].astype(float))
    hb, hp = rb @ nrm, rp @ nrm
    rp = rp[(hp >= hb.min()) & (hp <= hb.max())]
    a = rb.mean(axis=0) - rp.mean(axis=0)
    return rb.mean(axis=0), a - nrm * float(a @ nrm)


def _principal_reference(volume, body):
    """The minor in-plane principal axis of the body label's voxels over the middle 60 % of its height."""
    nrm = volume.slice_normal_ras()
    ras = volume.ijk_to_ras_points(np.argwhere(body)[:, ::-1].astype(float))
    h = ras @ nrm
    mid = ras[(h >= h.min() + 0.2 * np.ptp(h)) & (h <= h.max() - 0.2 * np.ptp(h))]
    d = mid - mid.mean(axis=0)
    d = d - np.outer(d @ nrm, nrm)
    w, vec = np.linalg.eigh(d.T @ d)
    return [vec[:, i] for i in np.argsort(w) if abs(vec[:, i] @ nrm) < 0.5][0]


def _errors(volume, bodies, wholes):
    """Per level: the click placement's AP axis against the posterior-element reference and against
    the body label's principal axes (°)."""
    out = []
    nrm = volume.slice_normal_ras()
    for level, body in bodies.items():
        centre, ref = _posterior_reference(volume, body, wholes[level])
        ap = place_from_click(volume, centre, level).outline.ap_axis
        out.append((_in_plane_angle(ap, ref, nrm), _in_plane_angle(ap, _principal_reference(volume, body), nrm)))
    return out


def test_real_ap_axes_closer_to_the_posterior_elements(totalseg_dir):
    """On the real CTs the mean error against the posterior-element reference was 3.4° with the
    canal → body axis alone (4.7, 6.4, 0.7, 2.8° at TotalSegmentator L1–L4, 1.3, 4.3° at TPTBox
    L3, L4); with the posterior elements it is 2.5° (4.0, 5.5, 1.3, 2.8, 0.7, 0.9°). Against the
    body label's principal axes the worst level was 8.1° (TPTBox L4) and is 5.8° (TotalSeg L2)."""
    tpt_ct, vert, sub = read_tptbox()
    ct = read_volume(os.path.join(totalseg_dir, "ct.nii.gz"))
    bodies = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(totalseg_dir, "vertebral_bodies.nii.gz")))
    total = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(totalseg_dir, "total.nii.gz")))
    # TotalSegmentator: vertebral_bodies 20–23 and total 31–28 are L1–L4
    errors = _errors(ct, {lv: bodies == b for lv, b in zip(("L1", "L2", "L3", "L4"), (20, 21, 22, 23))},
                     {lv: total == w for lv, w in zip(("L1", "L2", "L3", "L4"), (31, 30, 29, 28))})
    # TPTBox: vertebra labels 22 = L3, 23 = L4; subregion 50 = the body (L2 is cut by the crop)
    errors += _errors(tpt_ct, {lv: (vert == v) & (sub == 50) for lv, v in (("L3", 22), ("L4", 23))},
                      {lv: vert == v for lv, v in (("L3", 22), ("L4", 23))})
    posterior, principal = np.array(errors).T
    assert np.mean(posterior) <= 3.0, errors
    # no level worse than the worst before: 6.4° (posterior elements), 8.1° (principal axes)
    assert posterior.max() <= 6.4 and principal.max() <= 8.1, errors
