"""Independent-oracle tests of OsteoROILib.roi.geometry (ROI voxel sets).

The oracle is a brute-force voxel-centre rasterizer written here: it visits EVERY voxel of a
(small, or virtually enlarged) grid, computes the voxel centre from ``ijk_to_ras`` directly and
applies the membership rule of the geometry module docstring in its own code:

    d = p - centre; su = d.u; sv = d.v; sn = d.n with n = u x v
    ellipse: (su/hu)^2 + (sv/hv)^2 <= 1; rectangle: |su| <= hu and |sv| <= hv (boundary inside)
    slab: -slab/2 <= sn < slab/2 (half-open).

Random cases compare voxel SETS; voxels whose centre lies within ``AMBIGUOUS_MM`` of a boundary
(where the 1e-6 mm tolerance or round-off decides) are left out of the comparison.
"""

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OsteoROILib.roi.geometry import RoiShape, roi_voxels

AMBIGUOUS_MM = 1e-4


# --------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------
def brute_force(kind, center, u, v, hu, hv, slab, ijk_to_ras, lo, hi):
    """Classify every voxel centre (i, j, k) with lo <= (i, j, k) <= hi (inclusive).

    Returns (ijk (N, 3) int array of all grid voxels, inside bool (N,), ambiguous bool (N,)).
    """
    m = np.asarray(ijk_to_ras, dtype=float)
    ii, jj, kk = np.meshgrid(
        np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), np.arange(lo[2], hi[2] + 1), indexing="ij"
    )
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)
    ras = ijk @ m[:3, :3].T + m[:3, 3]
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    n = np.cross(u, v)
    d = ras - np.asarray(center, float)
    su, sv, sn = d @ u, d @ v, d @ n
    h = slab / 2.0
    in_slab = (sn >= -h) & (sn < h)
    amb = (np.abs(sn + h) < AMBIGUOUS_MM) | (np.abs(sn - h) < AMBIGUOUS_MM)
    if kind == "ellipse":
        r = np.sqrt((su / hu) ** 2 + (sv / hv) ** 2)
        in_plane = r <= 1.0
        # |r - 1| * min(hu, hv) bounds the distance to the boundary from below.
        amb |= np.abs(r - 1.0) * min(hu, hv) < AMBIGUOUS_MM
    else:
        in_plane = (np.abs(su) <= hu) & (np.abs(sv) <= hv)
        amb |= (np.abs(np.abs(su) - hu) < AMBIGUOUS_MM) & (np.abs(sv) <= hv + AMBIGUOUS_MM)
        amb |= (np.abs(np.abs(sv) - hv) < AMBIGUOUS_MM) & (np.abs(su) <= hu + AMBIGUOUS_MM)
    return ijk, in_slab & in_plane, amb


def enclosing_ijk_range(center, hu, hv, slab, ijk_to_ras):
    """An IJK box containing every point within the ROI's circumscribed sphere (independent of the core)."""
    m = np.asarray(ijk_to_ras, dtype=float)
    inv = np.linalg.inv(m)
    radius = np.sqrt(hu ** 2 + hv ** 2 + (slab / 2.0) ** 2)
    c_ijk = inv[:3, :3] @ np.asarray(center, float) + inv[:3, 3]
    # |delta ijk_c| <= ||row c of inv|| * radius
    reach = np.linalg.norm(inv[:3, :3], axis=1) * radius
    lo = np.floor(c_ijk - reach).astype(int) - 1
    hi = np.ceil(c_ijk + reach).astype(int) + 1
    return lo, hi


def as_set(ijk):
    return {tuple(int(x) for x in row) for row in ijk}


def core_set(vs):
    return set(zip(vs.i.tolist(), vs.j.tolist(), vs.k.tolist()))


def compare_with_oracle(kind, center, u, v, hu, hv, slab, m, dims):
    """Assert the core's voxel set and n_outside equal the brute-force oracle's (ambiguous voxels excepted)."""
    shape = RoiShape(kind, tuple(center), tuple(u), tuple(v), hu, hv, slab)
    vs = roi_voxels(shape, m, dims)
    got = core_set(vs)
    assert len(got) == vs.count, "duplicate voxels returned"
    # Every returned voxel lies in the image.
    for name, arr, dim in (("i", vs.i, dims[0]), ("j", vs.j, dims[1]), ("k", vs.k, dims[2])):
        assert np.all((arr >= 0) & (arr < dim)), f"returned {name} index outside the image"
    # Oracle over an enlarged virtual grid covering both the image and the whole ROI.
    # (Voxels beyond the ROI's circumscribed sphere cannot be inside, so its IJK box suffices.)
    lo, hi = enclosing_ijk_range(center, hu, hv, slab, m)
    ijk, inside, amb = brute_force(kind, center, u, v, hu, hv, slab, m, lo, hi)
    in_image = np.all((ijk >= 0) & (ijk < np.asarray(dims)), axis=1)
    sure_in = as_set(ijk[inside & ~amb & in_image])
    sure_out = as_set(ijk[~inside & ~amb & in_image])
    missing = sure_in - got
    extra = got & sure_out
    assert not missing, f"{len(missing)} in-ROI voxels missed, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} voxels outside the ROI returned, e.g. {sorted(extra)[:3]}"
    # Every returned voxel was seen by the oracle grid (i.e. lies within the ROI's reach).
    assert got <= as_set(ijk[in_image])
    # Clipping count: in-ROI voxel centres outside the image grid.
    n_out_lo = int(np.count_nonzero(inside & ~amb & ~in_image))
    n_out_hi = int(np.count_nonzero((inside | amb) & ~in_image))
    assert n_out_lo <= vs.n_outside <= n_out_hi
    return vs, int(np.count_nonzero(inside & ~amb & in_image)), int(np.count_nonzero(amb))


# --------------------------------------------------------------------------------------------
# Random geometry
# --------------------------------------------------------------------------------------------
def random_rotation(rng, allow_reflection=True):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if allow_reflection and rng.random() < 0.5:
        q[:, rng.integers(3)] *= -1.0
    elif np.linalg.det(q) < 0:
        q[:, 0] *= -1.0
    return q


def random_case(rng):
    """A random oblique, anisotropic grid and a random ROI overlapping it (possibly partly outside)."""
    flavour = rng.integers(4)
    if flavour == 0:  # DICOM-like LPS axial grid expressed in RAS
        direction = np.diag([-1.0, -1.0, 1.0])
    elif flavour == 1:  # LPS axial with a random permutation / flips of the axes
        direction = np.diag([-1.0, -1.0, 1.0])[:, rng.permutation(3)] * rng.choice([-1.0, 1.0], size=3)
    else:  # arbitrary oblique, with or without reflection
        direction = random_rotation(rng)
    spacing = rng.uniform(0.3, 3.0, size=3)
    dims = tuple(int(x) for x in rng.integers(4, 28, size=3))
    m = np.eye(4)
    m[:3, :3] = direction @ np.diag(spacing)
    m[:3, 3] = rng.uniform(-200, 200, size=3)
    # ROI frame: random rotation (not aligned with the grid).
    frame = random_rotation(rng, allow_reflection=False)
    u, v = frame[:, 0], frame[:, 1]
    scale = float(np.mean(spacing))
    hu, hv = rng.uniform(0.4, 6.0, size=2) * scale
    slab = float(rng.uniform(0.3, 8.0) * scale)
    # Centre anywhere in the image box, enlarged by a few voxels (so some ROIs are clipped).
    ijk_c = rng.uniform(-3, np.asarray(dims) + 2)
    center = m[:3, :3] @ ijk_c + m[:3, 3]
    kind = ["ellipse", "rectangle"][rng.integers(2)]
    return kind, center, u, v, float(hu), float(hv), slab, m, dims


@pytest.mark.parametrize("seed", range(200))
def test_random_cases_match_brute_force(seed):
    rng = np.random.default_rng(1000 + seed)
    compare_with_oracle(*random_case(rng))


def test_random_cases_are_informative():
    """The random suite is not vacuous: most cases hold voxels and some are clipped."""
    non_empty = clipped = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        case = random_case(rng)
        vs, _, _ = compare_with_oracle(*case)
        non_empty += vs.count > 0
        clipped += vs.n_outside > 0
    assert non_empty >= 150
    assert clipped >= 20


unit_floats = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def cases(draw):
    # Rotation from a (normalised) quaternion; optional reflection of one axis.
    q = np.array([draw(unit_floats) for _ in range(4)])
    if np.linalg.norm(q) < 0.1:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    flip = draw(st.sampled_from([None, 0, 1, 2]))
    if flip is not None:
        rot[:, flip] *= -1
    spacing = np.array([draw(st.floats(0.3, 3.0)) for _ in range(3)])
    dims = tuple(draw(st.integers(3, 20)) for _ in range(3))
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag(spacing)
    m[:3, 3] = [draw(st.floats(-100, 100)) for _ in range(3)]
    # ROI frame from a second quaternion.
    q2 = np.array([draw(unit_floats) for _ in range(4)])
    if np.linalg.norm(q2) < 0.1:
        q2 = np.array([0.3, 0.1, -0.7, 0.2])
    w, x, y, z = q2 / np.linalg.norm(q2)
    u = np.array([1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w)])
    v = np.array([2 * (x * y - z * w), 1 - 2 * (x * x + z * z), 2 * (y * z + x * w)])
    scale = float(np.mean(spacing))
    hu = draw(st.floats(0.3, 5.0)) * scale
    hv = draw(st.floats(0.3, 5.0)) * scale
    slab = draw(st.floats(0.3, 6.0)) * scale
    ijk_c = np.array([draw(st.floats(-2.0, d + 1.0)) for d in dims])
    center = m[:3, :3] @ ijk_c + m[:3, 3]
    kind = draw(st.sampled_from(["ellipse", "rectangle"]))
    return kind, center, u, v, hu, hv, slab, m, dims


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_property_matches_brute_force(case):
    compare_with_oracle(*case)


# --------------------------------------------------------------------------------------------
# Returned voxels obey the rule (tolerance 1e-6 mm)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))
def test_returned_voxels_satisfy_rule(seed):
    rng = np.random.default_rng(5000 + seed)
    kind, center, u, v, hu, hv, slab, m, dims = random_case(rng)
    vs = roi_voxels(RoiShape(kind, tuple(center), tuple(u), tuple(v), hu, hv, slab), m, dims)
    ijk = np.stack([vs.i, vs.j, vs.k], axis=1).astype(float)
    d = ijk @ m[:3, :3].T + m[:3, 3] - center
    n = np.cross(u, v)
    su, sv, sn = d @ u, d @ v, d @ n
    tol = 2e-6
    assert np.all(sn >= -slab / 2 - tol) and np.all(sn < slab / 2 + tol)
    if kind == "ellipse":
        assert np.all(np.hypot(su / hu, sv / hv) <= 1 + tol / min(hu, hv))
    else:
        assert np.all(np.abs(su) <= hu + tol) and np.all(np.abs(sv) <= hv + tol)


# --------------------------------------------------------------------------------------------
# Exact boundary rules
# --------------------------------------------------------------------------------------------
AXIAL = np.diag([-1.0, -1.0, 1.0])  # LPS-stored axial CT expressed in RAS


def grid(spacing, origin=(0.0, 0.0, 0.0), direction=AXIAL):
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, float) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def test_in_plane_boundary_is_inclusive():
    m = grid((1.0, 1.0, 1.0))
    dims = (21, 21, 5)
    centre = m[:3, :3] @ np.array([10.0, 10.0, 2.0]) + m[:3, 3]
    ax_u, ax_v = (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)
    rect = roi_voxels(RoiShape("rectangle", tuple(centre), ax_u, ax_v, 2.0, 3.0, 1.0), m, dims)
    assert rect.count == 5 * 7  # |su| <= 2, |sv| <= 3 on a 1 mm grid: 5 x 7 centres
    circ = roi_voxels(RoiShape("ellipse", tuple(centre), ax_u, ax_v, 2.0, 2.0, 1.0), m, dims)
    # Lattice points with x^2 + y^2 <= 4: 13 (incl. (+-2, 0), (0, +-2)).
    assert circ.count == 13
    ell = roi_voxels(RoiShape("ellipse", tuple(centre), ax_u, ax_v, 3.0, 1.0, 1.0), m, dims)
    # (x/3)^2 + y^2 <= 1: y=0 -> 7 points; y=+-1 -> x=0 only -> 2 points.
    assert ell.count == 9


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("between", [False, True])
@pytest.mark.parametrize("spacing_k", [0.625, 0.8, 1.25, 2.5, 3.0])
@pytest.mark.parametrize("normal_sign", [1.0, -1.0])
def test_slab_holds_exactly_n_layers(n_layers, between, spacing_k, normal_sign):
    m = grid((0.7, 0.7, spacing_k), origin=(12.3, -45.67, -301.1))
    dims = (20, 20, 16)
    k_c = 7.5 if between else 7.0
    centre = m[:3, :3] @ np.array([9.3, 10.1, k_c]) + m[:3, 3]
    # n = u x v; flipping v flips n.
    u = (0.0, 1.0, 0.0)
    v = (-normal_sign, 0.0, 0.0)
    shape = RoiShape("ellipse", tuple(centre), u, v, 3.0, 3.0, n_layers * spacing_k)
    assert np.allclose(shape.normal, (0.0, 0.0, normal_sign))
    vs = roi_voxels(shape, m, dims)
    layers = sorted(set(vs.k.tolist()))
    assert len(layers) == n_layers, layers
    assert layers == list(range(layers[0], layers[0] + n_layers))
    # Same in-plane footprint in each layer.
    counts = [int(np.count_nonzero(vs.k == k)) for k in layers]
    assert len(set(counts)) == 1 and counts[0] > 0
    # Which layers: -slab/2 <= sn < slab/2 with sn = normal_sign * (k - k_c) * spacing.
    expected = [k for k in range(dims[2]) if -n_layers / 2 <= normal_sign * (k - k_c) < n_layers / 2]
    assert layers == expected


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_slab_layers_on_oblique_grid(seed, n_layers):
    """Normal along an oblique grid's slice axis: exactly N layers, centre on or between slices."""
    rng = np.random.default_rng(seed)
    direction = random_rotation(rng)
    spacing = rng.uniform(0.5, 3.0, size=3)
    m = grid(spacing, origin=rng.uniform(-100, 100, 3), direction=direction)
    dims = (18, 18, 14)
    n = direction[:, 2] * rng.choice([-1.0, 1.0])
    u = np.cross(n, direction[:, 0])
    u /= np.linalg.norm(u)
    v = np.cross(n, u)  # u x v = n
    for k_c in (6.0, 6.5):
        centre = m[:3, :3] @ np.array([8.6, 8.9, k_c]) + m[:3, 3]
        shape = RoiShape("rectangle", tuple(centre), tuple(u), tuple(v), 2 * spacing.max(), 2 * spacing.max(),
                         n_layers * spacing[2])
        assert np.allclose(shape.normal, n)
        vs = roi_voxels(shape, m, dims)
        assert len(set(vs.k.tolist())) == n_layers


# --------------------------------------------------------------------------------------------
# Analytic areas
# --------------------------------------------------------------------------------------------
def area_bound(perimeter, dx, dy):
    """Voxel squares of included centres lie between the shape eroded and dilated by half a diagonal."""
    r = 0.5 * np.hypot(dx, dy)
    return perimeter * r + np.pi * r * r


@pytest.mark.parametrize(
    "kind,hu,hv,angle_deg",
    [
        ("ellipse", 10.0, 10.0, 0.0),
        ("ellipse", 12.0, 7.0, 0.0),
        ("ellipse", 12.0, 7.0, 33.0),
        ("rectangle", 9.0, 5.5, 0.0),
        ("rectangle", 9.0, 5.5, 21.0),
    ],
)
@pytest.mark.parametrize("dx,dy", [(0.25, 0.25), (0.3, 0.45)])
def test_voxel_area_matches_analytic_area(kind, hu, hv, angle_deg, dx, dy):
    m = grid((dx, dy, 1.0), origin=(3.1, -7.3, 0.0))
    dims = (140, 120, 3)
    centre = m[:3, :3] @ np.array([69.37, 58.71, 1.0]) + m[:3, 3]
    a = np.radians(angle_deg)
    u = np.array([np.sin(a), np.cos(a), 0.0])  # anterior rotated about S
    v = np.cross((0.0, 0.0, 1.0), u)
    vs = roi_voxels(RoiShape(kind, tuple(centre), tuple(u), tuple(v), hu, hv, 1.0), m, dims)
    assert vs.n_outside == 0 and set(vs.k.tolist()) == {1}
    area = vs.count * dx * dy
    if kind == "ellipse":
        exact = np.pi * hu * hv
        perimeter = np.pi * np.sqrt(2 * (hu ** 2 + hv ** 2))  # upper bound of an ellipse's perimeter
    else:
        exact = 4 * hu * hv
        perimeter = 4 * (hu + hv)
    assert abs(area - exact) <= area_bound(perimeter, dx, dy)
    if kind == "ellipse":  # boundary errors average out on a curved outline: much tighter in practice
        assert abs(area - exact) <= 0.015 * exact


# --------------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("corner", [(0, 0, 0), (1, 1, 1), (0, 1, 0), (1, 0, 1)])
@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
def test_clipped_roi_counts_outside_voxels(corner, kind):
    rng = np.random.default_rng([*corner, len(kind)])
    direction = random_rotation(rng)
    spacing = np.array([0.8, 1.1, 2.0])
    m = grid(spacing, origin=(5.0, 6.0, 7.0), direction=direction)
    dims = (15, 12, 9)
    ijk_c = np.array([(d - 1) * c for d, c in zip(dims, corner)], float) + rng.uniform(-0.4, 0.4, 3)
    centre = m[:3, :3] @ ijk_c + m[:3, 3]
    frame = random_rotation(rng, allow_reflection=False)
    hu, hv, slab = 5.3, 3.7, 6.1
    vs, _, _ = compare_with_oracle(kind, centre, frame[:, 0], frame[:, 1], hu, hv, slab, m, dims)
    assert vs.count > 0 and vs.n_outside > 0
    # Exact brute-force counts (no ties expected here).
    lo, hi = enclosing_ijk_range(centre, hu, hv, slab, m)
    ijk, inside, amb = brute_force(kind, centre, frame[:, 0], frame[:, 1], hu, hv, slab, m, lo, hi)
    assert not amb[inside].any()
    in_image = np.all((ijk >= 0) & (ijk < np.asarray(dims)), axis=1)
    assert vs.n_outside == int(np.count_nonzero(inside & ~in_image))
    assert vs.count == int(np.count_nonzero(inside & in_image))


def test_roi_entirely_outside_image():
    m = grid((1.0, 1.0, 1.0))
    dims = (10, 10, 10)
    centre = m[:3, :3] @ np.array([30.0, 5.0, 5.0]) + m[:3, 3]
    vs = roi_voxels(RoiShape("ellipse", tuple(centre), (0, 1, 0), (-1, 0, 0), 2.0, 2.0, 1.0), m, dims)
    assert vs.count == 0
    assert vs.n_outside == 13


# --------------------------------------------------------------------------------------------
# Only the bounding box is visited
# --------------------------------------------------------------------------------------------
def test_huge_dimensions_small_roi_is_fast_and_correct():
    m = grid((0.5, 0.5, 0.5), origin=(-1250.0, -1250.0, -1250.0))
    dims = (5000, 5000, 5000)  # 1.25e11 voxels: a full-volume mask could not be allocated
    centre = m[:3, :3] @ np.array([2500.3, 2499.8, 2500.1]) + m[:3, 3]
    u = np.array([0.3, 0.9, 0.1])
    u /= np.linalg.norm(u)
    v = np.cross((0.0, 0.0, 1.0), u)
    v /= np.linalg.norm(v)
    shape = RoiShape("ellipse", tuple(centre), tuple(u), tuple(v), 4.0, 3.0, 2.0)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        vs = roi_voxels(shape, m, dims)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 50e6
    assert vs.n_outside == 0
    lo, hi = enclosing_ijk_range(centre, 4.0, 3.0, 2.0, m)
    ijk, inside, amb = brute_force("ellipse", centre, u, shape.axis_v, 4.0, 3.0, 2.0, m, lo, hi)
    assert not amb.any()
    assert core_set(vs) == as_set(ijk[inside])
