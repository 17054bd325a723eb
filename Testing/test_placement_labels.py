"""Placement from a vertebra label: the label says which vertebra, the image decides the ROIs.

A label and a click inside the same body give the same placement (one 3-D estimate per vertebra);
the label then cross-checks it, and where the two disagree (a shifted or eroded label, an unclear
image) the label-driven fit is used with a warning that says why; a label of a disc is refused.
Oracles: the phantom's analytic truth; on the real CTs the model-made labels (made by someone else)
and clicks placed from those labels' voxels, independently of the label placement.
"""
import json

import numpy as np
import pytest


from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.errors import InputError, PlacementError
from OsteoROILib.export import measurement as results
from OsteoROILib.io.image_files import read_volume
from OsteoROILib.placement.click import place_from_click
from OsteoROILib.placement.labels import BUILTIN_LABEL_MAPS, place_from_label, place_from_labels, read_labels
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.roi.geometry import RoiShape, roi_voxels

from conftest import read_tptbox
from test_placement_auto import angle_deg, assert_pure_trabecular, label_array

FALLBACK_WORDS = "placed by fitting to the label's boundary"


def roi_voxel_sets(volume, result):
    """(level, shape) → the ROI's voxels, rebuilt from the row's ROI geometry."""
    out = {}
    for row in result["rows"]:
        r = row["roi"]
        shape = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"], r["half_v_mm"],
                         r["slab_mm"])
        out[(row["level"], row["shape"])] = roi_voxels(shape, volume.ijk_to_ras, volume.dimensions)
    return out


def grown(mask):
    """A [k, j, i] mask grown by one voxel in-plane (a model's ragged boundary)."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(mask)
    for dj in (0, 1, 2):
        for di in (0, 1, 2):
            out |= p[:, dj:dj + mask.shape[1], di:di + mask.shape[2]]
    return out


def clicks_inside(volume, body, n, seed):
    """``n`` points in the middle 60 % of the label's height, within 3 mm of its centre in-plane."""
    rng = np.random.default_rng(seed)
    nrm = volume.slice_normal_ras()
    ras = volume.ijk_to_ras_points(np.argwhere(body)[:, ::-1].astype(float))
    c, h = ras.mean(axis=0), ras @ nrm
    u = volume.in_plane_anterior()
    v = np.cross(nrm, u)
    return [c + rng.uniform(-3, 3) * u + rng.uniform(-3, 3) * v
            + (h.min() + (h.max() - h.min()) * rng.uniform(0.2, 0.8) - c @ nrm) * nrm for _ in range(n)]


# --- synthetic truth -----------------------------------------------------------------------------
def test_label_placement_is_the_image_estimate_on_the_phantom_and_the_row_says_so():
    volume, truth = make_phantom(rotation_deg=(0, 12, -8, 0))
    m = {"L1": 20, "L2": 21, "L3": 22}
    placements, _ = place_from_labels(volume, label_array(volume, truth, m), m)
    result = measure_levels(volume, None, placements=placements)
    assert_pure_trabecular(volume, truth, result)
    for level, pl in placements.items():
        lv = truth.level(level)
        assert pl.slice_index == lv.mid_slice_index and angle_deg(pl.outline.ap_axis, lv.ap_axis_ras) <= 3.0
        assert pl.method == "auto (label)" and not any(FALLBACK_WORDS in w for w in pl.warnings)
    for row in result["rows"]:
        # the label is the body's analytic outline: the fitted outline lies within a voxel of it
        assert row["label_estimate"] == "image" and 0.0 <= row["label_agreement_mm"] <= 1.0, row
    doc = json.loads(results.to_json_text(results.build_document(result, volume.describe())))
    results.validate_document(doc)
    assert all(doc["levels"][lv]["label_check"]["estimate"] == "image" for lv in m)


def test_a_shifted_label_on_the_phantom_falls_back_with_a_warning_and_stays_in_bone():
    """The phantom's L2 label moved 9 mm to the side: the image's outline (the truth's) no longer
    agrees with it, so the label-driven fit is used and the warning says which and why."""
    volume, truth = make_phantom()
    labels = label_array(volume, truth, {"L2": 21})
    shift = int(round(9.0 / volume.spacing[0]))
    pl = place_from_label(volume, np.roll(labels, shift, axis=2), 21, "L2")
    check = pl.outline.meta["label_check"]
    assert check["estimate"] == "label" and check["mean_distance_mm"] > 2.0
    assert any(FALLBACK_WORDS in w and "mm on average" in w for w in pl.warnings)
    # the same label unshifted: the image's estimate, identical to a click's
    same = place_from_label(volume, labels, 21, "L2")
    click = place_from_click(volume, truth.level("L2").center_ras + np.array([2.0, -3.0, 5.0]), "L2")
    assert same.outline.meta["label_check"]["estimate"] == "image"
    assert same.slice_index == click.slice_index
    np.testing.assert_allclose(same.outline.center, click.outline.center, atol=1e-9)
    np.testing.assert_allclose(same.outline.ap_axis, click.outline.ap_axis, atol=1e-12)


def test_unknown_estimate_is_refused_and_the_label_fit_can_be_asked_for():
    volume, truth = make_phantom()
    labels = label_array(volume, truth, {"L1": 5})
    with pytest.raises(InputError):
        place_from_labels(volume, labels, {"L1": 5}, estimate="click")
    pl = place_from_label(volume, labels, 5, "L1", estimate="label")
    assert pl.outline.meta["label_check"]["estimate"] == "label"
    assert pl.slice_index == truth.level("L1").mid_slice_index


# --- the real 3 mm CT ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(totalseg_dir):
    volume = read_volume(f"{totalseg_dir}/ct.nii.gz")
    labels, _ = read_labels(f"{totalseg_dir}/vertebral_bodies.nii.gz", volume)
    return volume, labels


def test_label_and_clicks_inside_the_body_give_the_same_rois_on_the_real_ct(real):
    volume, labels = real
    m = BUILTIN_LABEL_MAPS["bodies"]
    placements, missing = place_from_labels(volume, labels, m)
    assert not missing
    by_label = measure_levels(volume, None, placements=placements)
    voxels = roi_voxel_sets(volume, by_label)
    for i, (level, value) in enumerate(m.items()):
        body = labels == value
        pl = placements[level]
        assert pl.outline.meta["label_check"]["estimate"] == "image", pl.warnings
        ks = np.flatnonzero(body.any(axis=(1, 2)))
        assert ks.min() < pl.slice_index < ks.max()
        inside = grown(body)
        for shape in ("oval", "round", "front", "left", "right"):
            vs = voxels[(level, shape)]
            assert vs.count > 0 and inside[vs.k, vs.j, vs.i].all(), (level, shape)  # every ROI voxel in the body
        lab = {r["shape"]: r["mean_hu"] for r in by_label["rows"] if r["level"] == level}
        for p in clicks_inside(volume, body, 3, seed=40 + i):
            click = measure_levels(volume, {level: p})
            assert click["levels"][level]["slice_index"] == pl.slice_index
            for r in click["rows"]:
                assert abs(r["mean_hu"] - lab[r["shape"]]) <= 0.01 * abs(lab[r["shape"]]), (level, r["shape"])


def test_whole_vertebra_labels_give_the_body_labels_placement(real, totalseg_dir):
    volume, bodies = real
    whole, _ = read_labels(f"{totalseg_dir}/total.nii.gz", volume)
    by_body, _ = place_from_labels(volume, bodies, BUILTIN_LABEL_MAPS["bodies"])
    by_whole, _ = place_from_labels(volume, whole, BUILTIN_LABEL_MAPS["total"])
    for level in ("L1", "L2", "L3", "L4"):
        assert by_whole[level].outline.meta["label_check"]["estimate"] == "image"
        assert by_whole[level].slice_index == by_body[level].slice_index
        np.testing.assert_allclose(by_whole[level].outline.center, by_body[level].outline.center, atol=1e-9)


def erode_in_plane(mask, n):
    out = mask.copy()
    for _ in range(n):
        p = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        out = out & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
    return out


def grow_in_plane(mask, n):
    out = mask.copy()
    for _ in range(n):
        p = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        out = out | p[:, :-2, 1:-1] | p[:, 2:, 1:-1] | p[:, 1:-1, :-2] | p[:, 1:-1, 2:]
    return out


@pytest.mark.parametrize("change", ["shifted 9 mm", "eroded 9 mm", "grown 6 mm"])
def test_a_label_that_disagrees_with_the_image_falls_back_with_a_warning(real, change):
    volume, labels = real
    body = labels == BUILTIN_LABEL_MAPS["bodies"]["L3"]
    voxels = int(round(float(change.split()[1]) / volume.spacing[0]))
    if change.startswith("shifted"):
        bad = np.roll(body, voxels, axis=2)
    elif change.startswith("eroded"):
        bad = erode_in_plane(body, voxels)
    else:
        bad = grow_in_plane(body, voxels)
    pl = place_from_label(volume, bad.astype(np.int16), 1, "L3")
    check = pl.outline.meta["label_check"]
    assert check["estimate"] == "label" and check["mean_distance_mm"] > 3.0, check
    assert any(FALLBACK_WORDS in w and "tolerance 3.0 mm" in w for w in pl.warnings)
    result = measure_levels(volume, None, placements={"L3": pl})
    assert {r["label_estimate"] for r in result["rows"]} == {"label"}


@pytest.mark.parametrize("change", ["grown", "eroded", "shifted"])
def test_a_label_one_voxel_off_still_gives_the_image_placement(real, change):
    """A model's boundary is only as precise as its voxels: a label grown, eroded or shifted by one
    voxel still marks the body, and the placement (the image's) does not move at all."""
    volume, labels = real
    body = labels == BUILTIN_LABEL_MAPS["bodies"]["L2"]
    off = {"grown": grow_in_plane(body, 1), "eroded": erode_in_plane(body, 1), "shifted": np.roll(body, 1, axis=2)}
    ref = place_from_label(volume, body.astype(np.int16), 1, "L2")
    pl = place_from_label(volume, off[change].astype(np.int16), 1, "L2")
    assert pl.outline.meta["label_check"]["estimate"] == "image", pl.outline.meta["label_check"]
    assert pl.slice_index == ref.slice_index
    np.testing.assert_allclose(pl.outline.center, ref.outline.center, atol=1e-9)
    np.testing.assert_allclose(pl.outline.inner_contour, ref.outline.inner_contour, atol=1e-9)


def test_a_label_of_a_disc_is_refused(real):
    """The slices between the L2 and L3 body labels, with L2's footprint: no body lies in them."""
    volume, labels = real
    m = BUILTIN_LABEL_MAPS["bodies"]
    upper = np.flatnonzero((labels == m["L2"]).any(axis=(1, 2)))
    lower = np.flatnonzero((labels == m["L3"]).any(axis=(1, 2)))
    disc = np.zeros(labels.shape, dtype=np.int16)
    disc[lower.max():upper.min() + 1] = (labels == m["L2"]).any(axis=0)
    with pytest.raises(PlacementError) as err:
        place_from_label(volume, disc, 1, "L2")
    assert "disc" in err.value.problem and "--point" in err.value.remedy


# --- the real 1.5 mm crop (TPTBox) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tptbox():
    return read_tptbox()


def test_tptbox_l3_label_and_clicks_inside_give_the_same_rois_inside_the_body_label(tptbox):
    """TPTBox's body label (subregion 50) traces the endosteal boundary: it agrees with the cortex the
    image shows, so the label's placement is a click's; every ROI voxel lies in the label."""
    volume, vert, sub = tptbox
    body = (vert == 22) & (sub == 50)
    pl = place_from_label(volume, body.astype(np.int16), 1, "L3")
    assert pl.outline.meta["label_check"]["estimate"] == "image", pl.warnings
    by_label = measure_levels(volume, None, placements={"L3": pl})
    lab = {r["shape"]: r["mean_hu"] for r in by_label["rows"]}
    for p in clicks_inside(volume, body, 3, seed=7):
        click = measure_levels(volume, {"L3": p})
        assert click["levels"]["L3"]["slice_index"] == pl.slice_index
        for r in click["rows"]:
            assert abs(r["mean_hu"] - lab[r["shape"]]) <= 0.01 * abs(lab[r["shape"]]), r["shape"]
    assert_rois_inside(volume, body, by_label)


def test_tptbox_l4_cut_by_the_crop_falls_back_to_the_label_with_a_warning(tptbox):
    """L4's lower part is outside the crop: the image estimates its mid-height from a typical height,
    6 mm from the middle of what the label shows; the label-driven fit is used and the warning says
    why; every ROI voxel lies in the label."""
    volume, vert, sub = tptbox
    body = (vert == 23) & (sub == 50)
    pl = place_from_label(volume, body.astype(np.int16), 1, "L4")
    check = pl.outline.meta["label_check"]
    assert check["estimate"] == "label" and "middle of the label's slices" in check["reasons"][0]
    assert any(FALLBACK_WORDS in w for w in pl.warnings)
    assert_rois_inside(volume, body, measure_levels(volume, None, placements={"L4": pl}))


def assert_rois_inside(volume, body, result):
    axis = 2 - volume.slice_axis()
    inside = np.moveaxis(grown(np.moveaxis(body, axis, 0)), 0, axis)
    for (_, shape), vs in roi_voxel_sets(volume, result).items():
        assert vs.count > 0 and inside[vs.k, vs.j, vs.i].all(), shape


def test_cli_records_which_estimate_placed_each_level(tmp_path, capsys):
    """``--labels``: the image's estimate, checked (row label_estimate 'image'); ``--label-fit``: the
    label-driven fit, asked for and recorded; both on the phantom's truth mid slice."""
    import SimpleITK as sitk

    from OsteoROILib import cli
    from OsteoROILib.io.image_files import write_volume
    from OsteoROILib.io.volume import Volume

    volume, truth = make_phantom()
    ct = str(tmp_path / "ct.nrrd")
    write_volume(volume, ct)
    seg = str(tmp_path / "seg.nrrd")
    sitk.WriteImage(Volume(label_array(volume, truth, {"L1": 20, "L2": 21}), volume.ijk_to_ras).to_sitk(), seg)
    for extra, estimate in (([], "image"), (["--label-fit"], "label")):
        out = tmp_path / f"{estimate}.json"
        code = cli.main(["measure", ct, "--labels", seg, "--label-map", "bodies", *extra, "--json", str(out)])
        assert code == 0, capsys.readouterr().err
        doc = json.loads(out.read_text())
        results.validate_document(doc)
        assert {r["label_estimate"] for r in doc["rows"]} == {estimate}
        assert all(r["slice_index"] == truth.level(r["level"]).mid_slice_index for r in doc["rows"])
    code = cli.main(["measure", ct, "--point", "L1=0,0,0", "--label-fit"])
    assert code == 1 and "--label-fit was given without --labels" in capsys.readouterr().err


def test_the_vertebra_plane_keeps_the_labels_check():
    """``plane="vertebra"`` re-fits the outline on the tilted vertebra's plane; its rows still say which
    estimate the label's placement took (the phantom's tilted spine, truth mid-height)."""
    volume, truth = make_phantom(spine_tilt_deg=(12.0, -8.0), extent_ras=((-75, 75), (-75, 60), (-85, 85)))
    m = {"L2": 21}
    placements, _ = place_from_labels(volume, label_array(volume, truth, m), m)
    result = measure_levels(volume, None, placements=placements, plane="vertebra")
    assert {r["label_estimate"] for r in result["rows"]} == {"image"}
    assert {r["plane"] for r in result["rows"]} != {"image axial slice"}
