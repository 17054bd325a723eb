"""Independent-oracle tests of OsteoROILib.roi.family for an elliptic vertebral body outline.

Frame (roifamily docstring): s along the AP axis (towards anterior), t towards patient left, both
from the outline centre. Outer ellipse semi-axes (depth/2, width/2); inner (trabecular) ellipse
a = depth/2 - cortical, b = width/2 - cortical; demarcation line s_d = -depth/2 + depth/3.
Every expectation below is derived analytically or by brute force written here.
"""

import numpy as np
import pytest
from OsteoROILib.roi.family import SHAPE_NAMES, anterior_region, build_roi_family
from OsteoROILib.roi.inscribed import ELLIPSE_PHI, largest_p, tabulated
from OsteoROILib.roi.outline import BodyOutline
from OsteoROILib.roi.stats import roi_statistics
from OsteoROILib.io.volume import Volume

A = np.array([0.0, 1.0, 0.0])
S = np.array([0.0, 0.0, 1.0])
LEFT = np.array([-1.0, 0.0, 0.0])  # patient left in RAS
CENTRE = np.array([10.2, -20.3, 300.0])

# (depth, width, cortical)
BODIES = [(30.0, 45.0, 1.5), (25.0, 40.0, 1.0), (35.0, 50.0, 2.0), (32.0, 38.0, 1.5)]


def rot_z(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def family(depth, width, cortical, ap=A, normal=S, slab=3.0):
    outline = BodyOutline(CENTRE, ap, normal, depth, width, cortical)
    return outline, build_roi_family(outline, slab)


def st_of(point, ap=A, left=LEFT):
    d = np.asarray(point) - CENTRE
    return float(d @ ap), float(d @ left)


def inner(depth, width, cortical):
    return depth / 2 - cortical, width / 2 - cortical, -depth / 2 + depth / 3


def in_inner(s, t, a, b, tol=1e-9):
    return (np.asarray(s) / a) ** 2 + (np.asarray(t) / b) ** 2 <= 1 + tol


# --------------------------------------------------------------------------------------------
# Frame, demarcation, round
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", BODIES)
def test_frame_and_demarcation(body):
    outline, fam = family(*body)
    depth = body[0]
    np.testing.assert_allclose(outline.ap_axis, A, atol=1e-12)
    np.testing.assert_allclose(outline.left_axis, LEFT, atol=1e-12)
    assert outline.demarcation_s == pytest.approx(-depth / 6, abs=1e-12)
    assert list(fam.shapes) == list(SHAPE_NAMES)
    for shape in fam.shapes.values():
        np.testing.assert_allclose(shape.axis_u, A, atol=1e-12)
        np.testing.assert_allclose(shape.axis_v, LEFT, atol=1e-12)
        np.testing.assert_allclose(shape.normal, S, atol=1e-12)
        assert shape.slab_mm == 3.0


@pytest.mark.parametrize("body", BODIES)
def test_round_roi(body):
    depth, _, cortical = body
    a, _, s_d = inner(*body)
    _, fam = family(*body)
    rnd = fam.shapes["round"]
    diameter = (depth / 2 - cortical) - (-depth / 6)
    assert rnd.kind == "ellipse"
    assert rnd.half_u == pytest.approx(diameter / 2, abs=1e-9)
    assert rnd.half_v == pytest.approx(diameter / 2, abs=1e-9)
    s, t = st_of(rnd.center)
    assert t == pytest.approx(0.0, abs=1e-9)
    assert s - diameter / 2 == pytest.approx(s_d, abs=1e-9)  # touches the demarcation line
    assert s + diameter / 2 == pytest.approx(a, abs=1e-9)  # touches the inner anterior cortex
    assert rnd.center[2] == pytest.approx(CENTRE[2])


# --------------------------------------------------------------------------------------------
# Oval
# --------------------------------------------------------------------------------------------
def grid_search_oval(a, b, s_d, n=160, n_phi=721):
    """Max p*q over axis-aligned ellipses (centre (s0, 0), semi-axes p, q) inside E(a, b) with s >= s_d."""
    phi = np.linspace(0.0, np.pi, n_phi)[1:-1]
    cos, sin = np.cos(phi), np.sin(phi)
    best = (0.0, None)
    for p in np.linspace((a - s_d) / (2 * n), (a - s_d) / 2, n):
        s0 = np.linspace(s_d + p, a - p, n)[:, None]
        s = s0 + p * cos[None, :]
        room = 1.0 - (s / a) ** 2
        with np.errstate(invalid="ignore"):
            q = np.where(room > 0, b * np.sqrt(np.clip(room, 0, None)) / sin[None, :], 0.0).min(axis=1)
        k = int(np.argmax(q))
        if p * q[k] > best[0]:
            best = (p * q[k], (float(s0[k, 0]), float(p), float(q[k])))
    return best


@pytest.mark.parametrize("body", BODIES)
def test_oval_is_contained_and_large(body):
    a, b, s_d = inner(*body)
    _, fam = family(*body)
    oval = fam.shapes["oval"]
    s0, t0 = st_of(oval.center)
    p, q = oval.half_u, oval.half_v
    assert oval.kind == "ellipse"
    assert t0 == pytest.approx(0.0, abs=1e-9)  # symmetric about the AP midline
    # Containment: dense boundary samples inside the inner ellipse and anterior to s_d.
    phi = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
    s, t = s0 + p * np.cos(phi), q * np.sin(phi)
    excess = ((s / a) ** 2 + (t / b) ** 2).max() - 1.0
    assert excess <= 1e-6, f"oval pokes out of the inner ellipse (normalised excess {excess:.2e})"
    assert s.min() >= s_d - 1e-6
    area = np.pi * p * q
    # Hand-constructed feasible ellipses (each checked feasible here) are no larger.
    lam = (a - s_d) / (2 * a)  # homothety of the inner ellipse about its anterior vertex (a, 0)
    homothetic = np.pi * lam * lam * a * b
    assert (a * (1 - lam)) - lam * a == pytest.approx(s_d)
    assert area >= homothetic * (1 - 1e-6)
    r = (a - s_d) / 2
    sr, tr = s_d + r + r * np.cos(phi), r * np.sin(phi)
    if in_inner(sr, tr, a, b).all():
        assert area >= np.pi * r * r * (1 - 1e-6)
    # A flat ellipse: semi-axis p along s sitting on the demarcation line, widest q that fits.
    pf = 0.25 * (a - s_d)
    sf = s_d + pf + pf * np.cos(phi)
    with np.errstate(divide="ignore", invalid="ignore"):
        qf = np.nanmin(np.where(np.abs(np.sin(phi)) > 1e-9, b * np.sqrt(1 - (sf / a) ** 2) / np.abs(np.sin(phi)), np.inf))
    assert in_inner(sf, 0.999 * qf * np.sin(phi), a, b).all()
    assert area >= np.pi * pf * 0.999 * qf * (1 - 1e-6)
    # Within a few % of (and not above) a brute-force grid search.
    best_pq, best = grid_search_oval(a, b, s_d)
    assert p * q >= 0.98 * best_pq, (p, q, best)
    assert p * q <= 1.002 * best_pq


# --------------------------------------------------------------------------------------------
# Rectangles
# --------------------------------------------------------------------------------------------
def rect_st(shape):
    s, t = st_of(shape.center)
    return s - shape.half_u, s + shape.half_u, t - shape.half_v, t + shape.half_v


@pytest.mark.parametrize("body", BODIES)
def test_rectangles(body):
    a, b, s_d = inner(*body)
    _, fam = family(*body)
    def hi(t):  # inner anterior edge at lateral position t
        return a * np.sqrt(1 - (t / b) ** 2)

    col = 2 * b / 3  # region's lateral extent is +-b (s_d < 0), split into three equal columns
    for name in ("front", "left", "right"):
        shape = fam.shapes[name]
        assert shape.kind == "rectangle"
        s_lo, s_hi, t_lo, t_hi = rect_st(shape)
        for s in (s_lo, s_hi):
            for t in (t_lo, t_hi):
                assert in_inner(s, t, a, b, tol=1e-7), (name, s, t)
        assert s_lo >= s_d - 1e-9, name
    # Front: centred on the midline, middle column, from s_d to the inner anterior cortex.
    s_lo, s_hi, t_lo, t_hi = rect_st(fam.shapes["front"])
    assert 0.5 * (t_lo + t_hi) == pytest.approx(0.0, abs=1e-9)
    assert t_hi - t_lo == pytest.approx(col, abs=0.02)
    assert s_lo == pytest.approx(s_d, abs=1e-6)
    assert s_hi == pytest.approx(hi(col / 2), abs=0.01)
    # Left / right: start at the front's sides, stay in their own column, mirror images.
    L, R = rect_st(fam.shapes["left"]), rect_st(fam.shapes["right"])
    assert L[2] == pytest.approx(t_hi, abs=1e-9) and R[3] == pytest.approx(t_lo, abs=1e-9)
    assert L[3] <= col * 1.5 + 0.02 and R[2] >= -col * 1.5 - 0.02
    assert L[0] == pytest.approx(R[0], abs=1e-9) and L[1] == pytest.approx(R[1], abs=1e-9)
    assert L[3] - L[2] == pytest.approx(R[3] - R[2], abs=1e-9)
    # Equal column widths: each side ROI spans at most one column; here (ellipse) it fills it.
    # Largest rectangle in the column from t_in = col/2 outward: for outer edge t_out its AP range
    # is [max(s_d, -hi(t_out)), hi(t_out)] (the band's narrowest line is at t_out).
    t_in = L[2]  # the front's side (= col / 2 up to the core's sampling of the lateral extent)
    t_out = np.linspace(t_in, t_in + col, 20001)[1:]
    t_out = t_out[t_out <= b]
    heights = hi(t_out) - np.maximum(s_d, -hi(t_out))
    best = ((t_out - t_in) * heights).max()
    area_left = (L[3] - L[2]) * (L[1] - L[0])
    assert area_left >= 0.99 * best and area_left <= best * (1 + 1e-6) + 1e-6


@pytest.mark.parametrize("body", BODIES)
def test_left_is_patient_left(body):
    _, fam = family(*body)
    x = {n: fam.shapes[n].center[0] for n in ("front", "left", "right")}
    assert x["left"] < x["front"] < x["right"]  # RAS: +x is patient right
    assert fam.shapes["front"].center[0] == pytest.approx(CENTRE[0], abs=1e-9)
    assert fam.shapes["round"].center[0] == pytest.approx(CENTRE[0], abs=1e-9)
    assert fam.shapes["oval"].center[0] == pytest.approx(CENTRE[0], abs=1e-9)


@pytest.mark.parametrize("deg", [25.0, -40.0, 180.0])
def test_rotated_ap_axis_rotates_family(deg):
    body = BODIES[0]
    rot = rot_z(deg)
    _, fam0 = family(*body)
    _, fam1 = family(*body, ap=rot @ A)
    for name in SHAPE_NAMES:
        s0, s1 = fam0.shapes[name], fam1.shapes[name]
        expected = CENTRE + rot @ (np.asarray(s0.center) - CENTRE)
        np.testing.assert_allclose(s1.center, expected, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(s1.axis_u, rot @ np.asarray(s0.axis_u), atol=1e-9)
        np.testing.assert_allclose(s1.axis_v, rot @ np.asarray(s0.axis_v), atol=1e-9)
        assert s1.half_u == pytest.approx(s0.half_u, abs=1e-6)
        assert s1.half_v == pytest.approx(s0.half_v, abs=1e-6)


# --------------------------------------------------------------------------------------------
# Measurement on a synthetic vertebra
# --------------------------------------------------------------------------------------------
def synthetic_vertebra(depth, width, cortical, ap, spacing=(0.5, 0.5, 1.0), dims=(150, 150, 7)):
    """1000 HU cortex ring, 150 HU inside the inner ellipse (140 in its posterior third), 0 outside."""
    ni, nj, nk = dims
    m = np.eye(4)
    m[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)  # LPS-stored axial grid
    # Put the body centre at voxel (74.3, 75.6, 3) (not on a voxel centre in-plane).
    m[:3, 3] = CENTRE - m[:3, :3] @ np.array([74.3, 75.6, 3.0])
    kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    ras = np.stack([ii, jj, kk], -1).astype(float) @ m[:3, :3].T + m[:3, 3]
    left = np.cross(S, ap)
    d = ras - CENTRE
    s, t = d @ ap, d @ left
    a, b, s_d = inner(depth, width, cortical)
    outer = (s / (depth / 2)) ** 2 + (t / (width / 2)) ** 2 <= 1.0
    trab = (s / a) ** 2 + (t / b) ** 2 <= 1.0
    arr = np.zeros((nk, nj, ni), np.float64)
    arr[outer] = 1000.0
    arr[trab] = 150.0
    arr[trab & (s < s_d - 1e-3)] = 140.0
    return Volume(arr, m)


@pytest.mark.parametrize("deg", [0.0, 25.0])
@pytest.mark.parametrize("body", BODIES[:2])
def test_rois_on_synthetic_vertebra_exclude_cortex(body, deg):
    ap = rot_z(deg) @ A
    vol = synthetic_vertebra(*body, ap=ap)
    _, fam = family(*body, ap=ap)
    for name, shape in fam.shapes.items():
        r = roi_statistics(vol, shape)
        assert r["n_voxels"] > 100, name
        assert r["warnings"] == [], (name, r["warnings"])
        assert r["max_hu"] == 150.0, f"{name} includes cortex or outside voxels (max {r['max_hu']})"
        assert r["min_hu"] == 150.0, f"{name} includes posterior-third voxels (min {r['min_hu']})"
        assert r["mean_hu"] == 150.0
        assert r["sd_hu"] == 0.0
        # Voxelised area close to the analytic area (0.5 mm pixels).
        assert abs(r["area_mm2"] - shape.nominal_area_mm2) <= 0.05 * shape.nominal_area_mm2, name


# --------------------------------------------------------------------------------------------
# The oval's optimiser against brute force on the same sampled constraints
# --------------------------------------------------------------------------------------------
def pair_matrix_p(lo, hi, c):
    """Largest p with lo_i + c_i p <= s0 <= hi_j - c_j p for all i, j: min over all pairs (brute force)."""
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return None
    gap = hi[None, :] - lo[:, None]
    if np.any(gap < 0):
        return None
    c_sum = c[:, None] + c[None, :]
    ok = c_sum > 1e-12
    return float(np.min(gap[ok] / c_sum[ok]))


def wavy_outline(depth, width, cortical, seed):
    """An asymmetric, non-elliptic trabecular contour (a polygon), as a fitted outline may be."""
    rng = np.random.default_rng(seed)
    th = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    r = 1 + 0.04 * np.sin(3 * th + rng.uniform(0, 6)) + 0.03 * np.cos(5 * th + rng.uniform(0, 6))
    a, b = depth / 2 - cortical, width / 2 - cortical
    poly = np.c_[a * r * np.cos(th) + rng.uniform(-1, 1), b * r * np.sin(th) + rng.uniform(-1.5, 1.5)]
    return BodyOutline(CENTRE, A, S, depth, width, cortical, inner_contour=poly)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_largest_p_equals_the_pair_minimum(seed):
    outline = wavy_outline(30.0, 44.0, 1.5, seed)
    region = tabulated(anterior_region(outline, 0.4), outline.width_mm / 2 + 1)
    c, sin = np.cos(ELLIPSE_PHI), np.sin(ELLIPSE_PHI)
    qs = np.linspace(0.3, 24.0, 40)  # the last ones are wider than the body: no ellipse fits
    ts = np.multiply.outer(qs, sin)
    lo, hi = region(ts.ravel())
    lo, hi = lo.reshape(ts.shape), hi.reshape(ts.shape)
    p, s0 = largest_p(lo, hi)
    n_fit = 0
    for k in range(qs.size):
        want = pair_matrix_p(lo[k], hi[k], c)
        if want is None or want <= 0:
            assert p[k] <= 0
            continue
        n_fit += 1
        assert p[k] == pytest.approx(want, rel=1e-9, abs=1e-9)
        # the centre sits in the feasible interval at that p
        assert np.max(lo[k] + c * p[k]) <= s0[k] + 1e-9 and s0[k] <= np.min(hi[k] - c * p[k]) + 1e-9
    assert 10 < n_fit < qs.size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oval_is_the_largest_over_a_dense_scan_of_widths(seed):
    """The oval's area p·q is the maximum of a dense scan over q (brute-force p per q, same samples)."""
    outline = wavy_outline(28.0 + 2 * seed, 40.0 + 3 * seed, 1.5, seed)
    margin = 0.4
    fam = build_roi_family(outline, 1.0, ["oval"], edge_margin_mm=margin)
    oval = fam.shapes["oval"]
    limit = outline.width_mm / 2 + 1
    region = tabulated(anterior_region(outline, margin), limit)
    c, sin = np.cos(ELLIPSE_PHI), np.sin(ELLIPSE_PHI)
    best = 0.0
    for q in np.linspace(0.05, limit, 3000):
        lo, hi = region(q * sin)
        p = pair_matrix_p(lo, hi, c)
        if p is not None and p > 0:
            best = max(best, p * q)
    got = oval.half_u * oval.half_v
    assert got >= best * (1 - 1e-6), (got, best)
    # and it is feasible: the brute-force p at its own q is not smaller than its p
    lo, hi = region(oval.half_v * sin)
    assert pair_matrix_p(lo, hi, c) >= oval.half_u * (1 - 1e-9)


def _circle_beyond_ellipse(a, b, s_c, r):
    """How far (along s) the circle (s_c + r cos φ, r sin φ) reaches beyond the ellipse of semi-axes
    (a, b), densely sampled; infinite when it is wider than the ellipse."""
    phi = np.linspace(-np.pi / 2, np.pi / 2, 20001)
    t = r * np.sin(phi)
    room = 1.0 - (t / b) ** 2
    if np.any(room < 0):
        return np.inf
    return max(0.0, float(np.max(s_c + r * np.cos(phi) - a * np.sqrt(room))))


@pytest.mark.parametrize("width", [26.5, 24.0, 21.0, 20.0])
def test_round_roi_warning_says_whether_it_crosses_the_outline_or_only_the_margin(width):
    """The seed-002 round ROI is kept as defined on a narrow body and flagged. With a partial-volume
    margin m, the family's region is the inner ellipse shrunk by m (semi-axes a − m, b − m): the
    warning must say whether the circle crosses the trabecular outline itself (by how much) or only
    enters the margin. Oracle: the circle against both ellipses, sampled densely here."""
    depth, cortical, m = 30.0, 1.5, 1.0
    a, b = depth / 2 - cortical, width / 2 - cortical
    s_d = -depth / 6
    r = ((a - m) - s_d) / 2  # the diameter runs from the demarcation line to the shrunk anterior edge
    s_c = s_d + r
    beyond_outline = _circle_beyond_ellipse(a, b, s_c, r)
    beyond_margin = _circle_beyond_ellipse(a - m, b - m, s_c, r)
    outline = BodyOutline(CENTRE, A, S, depth, width, cortical)
    fam = build_roi_family(outline, 3.0, edge_margin_mm=m, level="L1")
    assert fam.shapes["round"].half_u == pytest.approx(r, abs=1e-9)
    round_warnings = [w for w in fam.warnings if "round ROI" in w]
    if beyond_margin <= 0.25:
        assert round_warnings == []
    elif beyond_outline <= 0.25:
        (w,) = round_warnings
        assert "stays inside the trabecular outline" in w and "margin" in w
        assert float(w.split("reaches ")[1].split(" mm")[0]) == pytest.approx(beyond_margin, abs=0.1)
    elif np.isfinite(beyond_outline):
        (w,) = round_warnings
        assert "reaches beyond the trabecular outline (by up to" in w
        assert float(w.split("by up to ")[1].split(" mm")[0]) == pytest.approx(beyond_outline, abs=0.1)
    else:
        (w,) = round_warnings
        assert "beyond the outline's width" in w
    # the four cases above are all exercised
    assert {26.5: 0, 24.0: 1, 21.0: 2, 20.0: 3}[width] == (0 if beyond_margin <= 0.25 else 1 if beyond_outline <= 0.25
                                                           else 2 if np.isfinite(beyond_outline) else 3)
