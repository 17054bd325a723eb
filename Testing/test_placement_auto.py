"""Automatic placement: click → 3-D body → mid-vertebral slice → outline → five ROIs.

Oracles are the phantom's configured truth (mid slice, size, AP axis, trabecular HU) and, for
"no cortex in any ROI", the noise-free phantom itself: without partial volume every voxel whose
centre lies in the trabecular region reads exactly the configured HU, so a single cortical,
disc or lesion voxel inside an ROI shows up as a value different from it.
"""
import json

import numpy as np
import pytest

from OsteoROILib import cli

from OsteoROILib.export import measurement as results

from OsteoROILib.placement.click import METHOD_CLICK, place_from_click
from OsteoROILib.errors import InputError, PlacementError
from OsteoROILib.roi.geometry import roi_voxels
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.placement.labels import BUILTIN_LABEL_MAPS, parse_label_map, place_from_labels
from OsteoROILib.io.volume import Volume
from OsteoROILib.io.image_files import write_volume

OFFSET = np.array([3.0, 2.0, 4.0])  # a click off-centre in-plane and along S
SPINE_BOX = ((-75.0, 75.0), (-75.0, 60.0), (-85.0, 85.0))  # RAS box around the column (small, fast images)


def angle_deg(a, b, normal=None):
    """Angle between two axes; with ``normal``, ``b`` is first projected into that plane (the ROIs
    lie in the image's axial slice, which an oblique grid tilts)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if normal is not None:
        n = np.asarray(normal, float)
        b = b - n * np.dot(b, n)
    b = b / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(abs(np.dot(a, b)), -1, 1))))


def roi_values(volume, row):
    from OsteoROILib.roi.geometry import RoiShape

    r = row["roi"]
    shape = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"], r["half_v_mm"],
                     r["slab_mm"])
    return roi_voxels(shape, volume.ijk_to_ras, volume.dimensions).values(volume.array)


def assert_pure_trabecular(volume, truth, result):
    for row in result["rows"]:
        vals = roi_values(volume, row)
        hu = np.float32(truth.level(row["level"]).trabecular_hu)
        assert vals.size > 20, row["shape"]
        assert np.all(vals == hu), (row["level"], row["shape"], np.unique(vals))


@pytest.fixture(scope="module")
def default_phantom():
    return make_phantom()


def section_extents(lv, normal):
    """The true body's depth and width where the image's slice plane (``normal``) cuts it: the chords
    of its superellipse cross-section through the centre along the true AP and lateral axes
    projected into that plane (the configured sizes when the slice is perpendicular to the body)."""
    ap, lt = np.asarray(lv.ap_axis_ras, float), np.asarray(lv.left_axis_ras, float)
    n, p = np.asarray(normal, float), lv.body_exponent
    out = []
    for axis in (ap, lt):
        d = axis - n * np.dot(axis, n)
        d = d / np.linalg.norm(d)
        out.append(2.0 / ((abs(d @ ap) / (0.5 * lv.depth_mm)) ** p + (abs(d @ lt) / (0.5 * lv.width_mm)) ** p) ** (1 / p))
    return out


@pytest.mark.parametrize("options", [
    {},
    {"trabecular_hu": (45, 40, 35, 30)},  # osteoporotic: trabecular HU like muscle
    {"rotation_deg": (15, -10, 20, 0)},
    {"orientation": "oblique"},
    {"spacing": (0.7, 0.7, 0.6), "extent_ras": SPINE_BOX},
    {"spacing": (0.8, 0.8, 3.0), "supersample": 3, "extent_ras": SPINE_BOX},
], ids=["default", "osteoporotic", "rotated", "oblique", "0.6mm", "3mm"])
def test_click_finds_mid_slice_size_and_axis(options):
    volume, truth = make_phantom(**options)
    for lv in truth.levels:
        pl = place_from_click(volume, lv.center_ras + OFFSET, lv.name)
        assert pl.slice_index == lv.mid_slice_index
        o = pl.outline
        depth, width = section_extents(lv, o.normal)
        assert abs(o.depth_mm - depth) <= 2.0 and abs(o.width_mm - width) <= 2.0
        off = o.center - lv.center_ras
        assert np.linalg.norm(off - np.dot(off, o.normal) * o.normal) <= 1.0
        assert angle_deg(o.ap_axis, lv.ap_axis_ras, o.normal) <= 3.0
        assert pl.fit_quality >= 0.8 and not pl.warnings


@pytest.mark.parametrize("options", [{}, {"trabecular_hu": (45, 40, 35, 30)}, {"rotation_deg": (15, -10, 20, 0)},
                                     {"orientation": "oblique"}], ids=["default", "osteoporotic", "rotated", "oblique"])
def test_auto_rois_hold_no_cortex_and_read_the_true_hu(options):
    volume, truth = make_phantom(**options)
    points = {lv.name: lv.center_ras + OFFSET for lv in truth.levels}
    result = measure_levels(volume, points)
    assert_pure_trabecular(volume, truth, result)
    for row in result["rows"]:
        lv = truth.level(row["level"])
        assert row["placement"] == METHOD_CLICK and row["plane"] == "image axial slice"
        assert row["slice_index"] == lv.mid_slice_index
        assert angle_deg(row["ap_axis_ras"], lv.ap_axis_ras, row["roi"]["axis_u_ras"] and np.cross(
            row["roi"]["axis_u_ras"], row["roi"]["axis_v_ras"])) <= 3.0
        assert row["fit_quality"] >= 0.8 and row["high_hu_fraction"] == 0.0


def test_oval_fills_the_anterior_two_thirds(default_phantom):
    """Oval area ≥ 80 % of the largest ellipse in the TRUE anterior-2/3 trabecular region."""
    from OsteoROILib.roi.family import build_roi_family

    volume, truth = default_phantom
    for lv in truth.levels:
        pl = place_from_click(volume, lv.center_ras + OFFSET, lv.name)
        auto = build_roi_family(pl.outline, 2.5, ["oval"]).shapes["oval"]
        best = build_roi_family(lv.outline(), 2.5, ["oval"]).shapes["oval"]
        assert auto.nominal_area_mm2 >= 0.8 * best.nominal_area_mm2


def test_click_in_a_disc_snaps_to_the_nearest_body_with_a_warning(default_phantom):
    volume, truth = default_phantom
    l1, l2 = truth.level("L1"), truth.level("L2")
    # 2 mm below L1's inferior endplate: in the disc, nearer L1
    p = np.array([l1.center_ras[0], l1.center_ras[1], l1.inferior_endplate_s - 2.0])
    pl = place_from_click(volume, p, "L1")
    assert pl.snapped and any("snapped" in w for w in pl.warnings)
    assert pl.slice_index == l1.mid_slice_index
    p = np.array([l2.center_ras[0], l2.center_ras[1], l2.superior_endplate_s + 2.0])
    assert place_from_click(volume, p, "L2").slice_index == l2.mid_slice_index
    # the foundation's probe (--no-auto) still refuses it
    with pytest.raises(PlacementError):
        measure_levels(volume, {"L1": [l1.center_ras[0], l1.center_ras[1], l1.inferior_endplate_s - 5.0]}, auto=False)


def test_click_near_the_cortex_or_just_outside_is_snapped(default_phantom):
    volume, truth = default_phantom
    lv = truth.level("L3")
    near = lv.center_ras + (lv.depth_mm / 2 - 2.5) * lv.ap_axis_ras  # inside, 1 mm from the cortex
    pl = place_from_click(volume, near, "L3")
    assert pl.slice_index == lv.mid_slice_index and not pl.snapped
    outside = lv.center_ras + (lv.depth_mm / 2 + 2.0) * lv.ap_axis_ras + np.array([0, 0, 3.0])
    pl = place_from_click(volume, outside, "L3")
    assert pl.snapped and any("snapped" in w for w in pl.warnings)
    assert pl.slice_index == lv.mid_slice_index
    assert np.linalg.norm((pl.outline.center - lv.center_ras)[:2]) <= 1.0


def test_points_outside_any_body_are_refused(default_phantom):
    volume, truth = default_phantom
    for name in ("paraspinal_muscle_left", "subcutaneous_fat", "aorta", "spinal_canal"):
        with pytest.raises(PlacementError, match="does not look inside a vertebral body"):
            place_from_click(volume, truth.landmarks[name], "L1")
    # ... unless forced (default-size outline, flagged)
    r = measure_levels(volume, {"L1": truth.landmarks["paraspinal_muscle_left"]}, force=True)
    assert all(row["placement"] == "default size (forced)" and row["fit_quality"] is None for row in r["rows"])
    assert all(any("forced" in w for w in row["warnings"]) for row in r["rows"])


def _body_box(volume, lv, margin=6.0):
    """Array slices [k, j, i] of a box around the level's body (keeps the helpers fast)."""
    half = np.array([lv.width_mm, lv.width_mm, lv.height_mm]) / 2 + margin
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half + lv.center_ras
    ijk = volume.ras_to_ijk_points(corners)
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, np.asarray(volume.dimensions))
    return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])), lo, hi


def _body_coords(volume, lv):
    """(box slices, s, t, dz): every voxel centre of the box in the level's frame."""
    sl, lo, hi = _body_box(volume, lv)
    k, j, i = np.meshgrid(np.arange(lo[2], hi[2]), np.arange(lo[1], hi[1]), np.arange(lo[0], hi[0]), indexing="ij")
    shape = k.shape
    ras = np.stack([i, j, k], axis=-1).reshape(-1, 3) @ volume.ijk_to_ras[:3, :3].T + volume.ijk_to_ras[:3, 3]
    d = ras - lv.center_ras
    return sl, (d @ lv.ap_axis_ras).reshape(shape), (d @ lv.left_axis_ras).reshape(shape), d[:, 2].reshape(shape)


def test_wedge_vertebra():
    """An anterior wedge fracture of L2 (phantom option ``wedge_mm``: superior endplate tilted,
    8 mm lost anteriorly): the mid slice follows the central height and the ROIs stay in
    trabecular bone."""
    volume, truth = make_phantom(level_names=("L1", "L2", "L3"), trabecular_density=(140, 116, 96),
                                 depth_mm=30.0, width_mm=44.0, wedge_mm=(0.0, 8.0, 0.0))
    lv = truth.level("L2")
    assert lv.central_mid_s == pytest.approx(lv.center_ras[2] - 8.0 / 4)  # (top(0) + bottom) / 2
    pl = place_from_click(volume, lv.center_ras + OFFSET, "L2")
    k_expected = volume.nearest_slice_index(lv.center_ras + np.array([0, 0, lv.central_mid_s - lv.center_ras[2]]))
    assert abs(pl.slice_index - k_expected) <= 1, (pl.slice_index, k_expected)
    result = measure_levels(volume, {"L2": lv.center_ras + OFFSET})
    assert_pure_trabecular(volume, truth, result)


def test_bone_island_is_left_out_and_the_high_hu_fraction_counts_what_is_measured(default_phantom):
    """A bone island in the oval: its mask holds island voxels (independent count), the row leaves
    them out (``test_placement_bone_island``), so the dense share of the measured voxels is zero."""
    volume, truth = default_phantom
    lv = truth.level("L2")
    base = measure_levels(volume, {"L2": lv.center_ras})
    oval = next(r for r in base["rows"] if r["shape"] == "oval")
    centre = np.array(oval["center_ras"])
    dense, _ = make_phantom(bone_islands=[{"center_ras": centre, "radius_mm": 3.0, "hu": 1000.0}])
    r = measure_levels(dense, {"L2": lv.center_ras})
    row = next(x for x in r["rows"] if x["shape"] == "oval")
    vals = roi_values(dense, row)
    assert np.mean(vals == 1000.0) > 0.01  # independent count over the ROI's whole mask
    assert row["bone_islands_excluded"] and row["high_hu_fraction"] == 0.0
    assert any("bone island" in w for w in row["warnings"]) and not any("denser" in w for w in row["warnings"])
    assert oval["high_hu_fraction"] == 0.0


@pytest.mark.parametrize("angle, length", [(0.0, 8.0), (0.0, 4.0), (40.0, 8.0), (-90.0, 6.0)])
def test_osteophyte_is_left_out_of_the_outline(angle, length):
    """A bony spur on the anterior/lateral rim over the body's whole height (phantom option
    ``osteophytes``): the ROIs hold no spur or cortex, the size is the body's, and the fit says so."""
    spur = {"level": "L2", "angle_deg": angle, "length_mm": length, "width_mm": 12.0}
    volume, truth = make_phantom(level_names=("L1", "L2", "L3"), trabecular_density=(140, 116, 96),
                                 depth_mm=30.0, width_mm=44.0, osteophytes=[spur])
    lv = truth.level("L2")
    result = measure_levels(volume, {"L2": lv.center_ras + OFFSET})
    assert_pure_trabecular(volume, truth, result)
    row = result["rows"][0]
    assert abs(row["body_depth_mm"] - lv.depth_mm) <= 2.5 and abs(row["body_width_mm"] - lv.width_mm) <= 2.5
    assert angle_deg(row["ap_axis_ras"], lv.ap_axis_ras) <= 3.0
    assert any("osteophyte" in w for w in row["warnings"])


def test_vertebra_partly_outside_the_field_of_view():
    volume, truth = make_phantom()
    lv = truth.level("L1")
    top = lv.center_ras[2] + 4.0  # the image ends 4 mm above L1's mid-height
    ext = [(-160, 160), (-130, 150), (truth.level("L3").center_ras[2], top)]
    cut, truth2 = make_phantom(extent_ras=ext)
    lv2 = truth2.level("L1")
    pl = place_from_click(cut, lv2.center_ras - np.array([0, 0, 2.0]), "L1")
    assert any("outside the image" in w for w in pl.warnings)
    # one endplate only: the score falls by the height the plane may be off, and the plane truly
    # lies within that expected distance of the true mid-height (the phantom's truth)
    assert pl.fit_quality <= 0.9
    assert abs(float(pl.outline.center @ lv2.normal_ras) - lv2.central_mid_s) <= pl.reasons.expected_height_error_mm
    result = measure_levels(cut, {"L1": lv2.center_ras - np.array([0, 0, 2.0])})
    assert_pure_trabecular(cut, truth2, result)


# --- from a segmentation -------------------------------------------------------------------
def label_array(volume, truth, values):
    """Analytic label map of the bodies (outer outline, endplate to endplate)."""
    out = np.zeros(volume.array.shape, dtype=np.int16)
    for name, value in values.items():
        lv = truth.level(name)
        sl, s, t, dz = _body_coords(volume, lv)
        inside = ((s / (lv.depth_mm / 2)) ** 2 + (t / (lv.width_mm / 2)) ** 2 <= 1) & (np.abs(dz) <= lv.height_mm / 2)
        out[sl][inside] = value
    return out


def test_label_map_parsing():
    assert parse_label_map("total")[1] == {"T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28}
    assert parse_label_map("Bodies")[1] == {"L1": 20, "L2": 21, "L3": 22, "L4": 23}
    assert parse_label_map("l1=5, L2=6") == ("custom", {"L1": 5, "L2": 6})
    for bad in ("L1", "L1=x", "L9=3", "L1=3,L1=4", "L1=3,L2=3", ""):
        with pytest.raises(InputError):
            parse_label_map(bad)


def test_placement_from_labels_reports_missing_levels():
    volume, truth = make_phantom(rotation_deg=(0, 12, 0, 0))
    m = BUILTIN_LABEL_MAPS["total"]
    labels = label_array(volume, truth, {"L1": m["L1"], "L2": m["L2"], "L3": m["L3"]})  # no L4, no T12
    placements, missing = place_from_labels(volume, labels, m)
    assert sorted(placements) == ["L1", "L2", "L3"] and sorted(missing) == ["L4", "T12"]
    for name, pl in placements.items():
        lv = truth.level(name)
        assert pl.slice_index == lv.mid_slice_index
        assert angle_deg(pl.outline.ap_axis, lv.ap_axis_ras) <= 3.0
    result = measure_levels(volume, None, placements=placements)
    assert_pure_trabecular(volume, truth, result)


def test_cli_labels_auto_and_no_auto(tmp_path, capsys):
    volume, truth = make_phantom()
    ct = str(tmp_path / "ct.nrrd")
    write_volume(volume, ct)
    seg = Volume(label_array(volume, truth, {"L1": 20, "L2": 21}), volume.ijk_to_ras)
    seg_path = str(tmp_path / "seg.nrrd")
    import SimpleITK as sitk

    sitk.WriteImage(seg.to_sitk(), seg_path)
    out = tmp_path / "lab.json"
    code = cli.main(["measure", ct, "--labels", seg_path, "--label-map", "bodies", "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    doc = json.loads(out.read_text())
    results.validate_document(doc)
    assert sorted({r["level"] for r in doc["rows"]}) == ["L1", "L2"]
    assert "L3: label 22 is not present" in err and "L4: label 23" in err
    for r in doc["rows"]:
        assert r["placement"] == "auto (label)" and r["slice_index"] == truth.level(r["level"]).mid_slice_index
        assert abs(r["mean_hu"] - truth.level(r["level"]).trabecular_hu) < 1e-3
        assert {"fit_quality", "body_depth_mm", "body_width_mm", "ap_axis_ras", "plane"} <= set(r)
    p = truth.level("L2").center_ras + OFFSET
    out2 = tmp_path / "noauto.json"
    code = cli.main(["measure", ct, "--point", f"L2={p[0]},{p[1]},{p[2]}", "--no-auto", "--json", str(out2)])
    assert code == 0
    assert all(r["placement"] == "shell rays" for r in json.loads(out2.read_text())["rows"])
    # no label matches / label-map without labels / labels and points together
    code = cli.main(["measure", ct, "--labels", seg_path, "--label-map", "L1=99"])
    assert code == 1 and "None of the levels" in capsys.readouterr().err
    code = cli.main(["measure", ct, "--point", f"L2={p[0]},{p[1]},{p[2]}", "--label-map", "total"])
    assert code == 1 and "--labels" in capsys.readouterr().err
    code = cli.main(["measure", ct, "--point", f"L2={p[0]},{p[1]},{p[2]}", "--labels", seg_path])
    assert code == 1 and "Use one of them" in capsys.readouterr().err


# --- real CT (3 mm, model-made labels) -----------------------------------------------------
def test_real_ct_from_labels_and_clicks(totalseg_dir):
    import SimpleITK as sitk

    from OsteoROILib.placement.labels import read_labels
    from OsteoROILib.io.image_files import read_volume

    volume = read_volume(f"{totalseg_dir}/ct.nii.gz")
    labels, _ = read_labels(f"{totalseg_dir}/vertebral_bodies.nii.gz", volume)
    placements, missing = place_from_labels(volume, labels, BUILTIN_LABEL_MAPS["bodies"])
    assert not missing
    body = sitk.GetArrayFromImage(sitk.ReadImage(f"{totalseg_dir}/vertebral_bodies.nii.gz"))
    result = measure_levels(volume, None, placements=placements)
    for level, pl in placements.items():
        ks = np.unique(np.argwhere(body == BUILTIN_LABEL_MAPS["bodies"][level])[:, 0])
        assert abs(pl.slice_index - 0.5 * (ks.min() + ks.max())) <= 1.0
    for row in result["rows"]:
        assert 30 < row["mean_hu"] < 300 and row["p05_hu"] > -50, row
    # clicks at the label centroids: every level is found, on a slice inside its label
    for level, value in BUILTIN_LABEL_MAPS["bodies"].items():
        kji = np.argwhere(body == value)
        p = volume.ijk_to_ras_points(kji.mean(axis=0)[::-1])[0]
        pl = place_from_click(volume, p, level)
        ks = np.unique(kji[:, 0])
        assert ks.min() + 1 <= pl.slice_index <= ks.max() - 1


def test_labels_are_resampled_onto_the_volume_grid_not_the_image_it_was_read_from(tmp_path):
    """A DICOM volume's slice axis is set from the slice positions after reading (and an unevenly
    spaced series is resampled), so the SimpleITK image it was read from may describe another
    grid. Labels on another grid must land on the Volume's own voxels. Oracle: a labelled block's
    RAS centre, computed from each grid's own geometry."""
    import SimpleITK as sitk

    from OsteoROILib.placement.labels import read_labels

    ct = sitk.Image([40, 30, 20], sitk.sitkInt16)
    ct.SetSpacing([1.0, 1.0, 2.0])
    volume = Volume.from_sitk(ct, source="ct")
    # the corrected geometry: slices 2.5 mm apart starting 3 mm higher (as slice positions may say)
    volume.ijk_to_ras[:3, 2] = volume.ijk_to_ras[:3, 2] * 1.25
    volume.ijk_to_ras[2, 3] += 3.0
    assert volume.owner is ct  # the stale image is still attached
    # labels on a 2x finer in-plane grid: a block around RAS (−10, −8, 23)
    lab = sitk.Image([80, 60, 50], sitk.sitkUInt8)
    lab.SetSpacing([0.5, 0.5, 1.0])
    lab.SetOrigin([0.0, 0.0, 0.0])
    arr = np.zeros((50, 60, 80), np.uint8)
    centre_lps = np.array([10.0, 8.0, 23.0])  # LPS of RAS (−10, −8, 23)
    k0, j0, i0 = (centre_lps[::-1] / np.array([1.0, 0.5, 0.5])).round().astype(int)
    arr[k0 - 3:k0 + 4, j0 - 6:j0 + 7, i0 - 6:i0 + 7] = 7
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(lab)
    path = str(tmp_path / "labels.nii.gz")
    sitk.WriteImage(img, path)
    labels, notes = read_labels(path, volume)
    assert labels.shape == volume.array.shape and "resampled" in notes[0]
    got = volume.ijk_to_ras_points(np.argwhere(labels == 7)[:, ::-1].astype(float)).mean(axis=0)
    np.testing.assert_allclose(got, [-10.0, -8.0, 23.0], atol=1.3)
