"""The faster code paths from DICOM to the result table give the same answers as the code they replaced.

Each ``_reference_*`` function below is the previous (slower) implementation, kept here as a
test-only oracle; the current functions must agree with it exactly (bit for bit, same notes and
errors) over many seeded random cases:

* ``dicom_series.plan_series`` (slice checks: duplicates, orientation groups, positions, tilt, rescale),
  also when only the per-slice tags are read and the rest is completed for the reported slices;
* ``geometry.roi_voxels`` (all three ROI-frame coordinates broadcast at once);
* ``volume.check_ct`` (integer volumes scanned block by block until air is found);
* ``outputs.json_safe`` (fast paths for built-in types).
"""
from __future__ import annotations

import math
import random
from typing import Dict, List, Optional

import numpy as np
import pytest
from OsteoROILib.io import dicom_facts, dicom_series
from OsteoROILib.io import outputs
from OsteoROILib.io.dicom_facts import (
    HEADER_TAGS,
    SLICE_TAGS,
    TAG_COLUMNS,
    TAG_GANTRY_TILT,
    TAG_IOP,
    TAG_IPP,
    TAG_PIXEL_SPACING,
    TAG_ROWS,
    TAG_SOP_INSTANCE_UID,
    clean_text,
    facts_from_header,
    tag_float,
)
from OsteoROILib.io.dicom_series import (
    ORIENTATION_TOLERANCE,
    POSITION_TOLERANCE_MM,
    DicomSeries,
    DicomSlice,
    check_tilt,
)
from OsteoROILib.errors import InputError
from OsteoROILib.roi.geometry import RoiShape, bounding_box_ijk, inside_mask, roi_voxels
from OsteoROILib.io.volume import CT_MIN_HU_REQUIRED, Volume, check_ct

# --- reference: the previous _plan_series -----------------------------------------------------


def _reference_floats(text):
    if not text:
        return None
    try:
        values = np.array([float(v) for v in clean_text(text).split("\\") if v.strip()], dtype=float)
    except ValueError:
        return None
    return values if np.all(np.isfinite(values)) else None


def _reference_orientation_groups(slices):
    groups = []
    for s in slices:
        for g in groups:
            ref = g[0]
            same_size = (ref.header.get(TAG_ROWS), ref.header.get(TAG_COLUMNS)) == (
                s.header.get(TAG_ROWS), s.header.get(TAG_COLUMNS))
            if ref.orientation is None or s.orientation is None:
                same_orientation = ref.orientation is None and s.orientation is None
            else:
                same_orientation = bool(np.max(np.abs(ref.orientation - s.orientation)) <= ORIENTATION_TOLERANCE)
            if same_size and same_orientation:
                g.append(s)
                break
        else:
            groups.append([s])
    groups.sort(key=len, reverse=True)
    return groups


def _reference_plan_series(series, headers, notes):
    slices = []
    unreadable = 0
    seen_sop = set()
    duplicates = 0
    for f, header in headers:
        if header is None:
            unreadable += 1
            continue
        sop = clean_text(header.get(TAG_SOP_INSTANCE_UID, ""))
        if sop and sop in seen_sop:
            duplicates += 1
            continue
        seen_sop.add(sop)
        iop = _reference_floats(header.get(TAG_IOP))
        ipp = _reference_floats(header.get(TAG_IPP))
        slices.append(DicomSlice(f, header, ipp if ipp is not None and ipp.size == 3 else None,
                             iop if iop is not None and iop.size == 6 else None))
    if unreadable:
        notes.append(f"DICOM: {unreadable} file(s) of the series could not be read and were left out.")
    if duplicates:
        notes.append(f"DICOM: {duplicates} duplicate file(s) (same SOPInstanceUID) were left out.")
    if not slices:
        raise InputError(f"None of the files of {series.label()} could be read.", "-")
    groups = _reference_orientation_groups(slices)
    slices = groups[0]
    if len(groups) > 1:
        left_out = sum(len(g) for g in groups[1:])
        notes.append(
            f"DICOM: {left_out} image(s) of the series have another orientation or matrix size than the "
            f"{len(slices)} main images (e.g. a localizer stored in the same series) and were left out."
        )
    label = series.label()
    facts = facts_from_header(slices[0].header)
    pixel_spacing = _reference_floats(slices[0].header.get(TAG_PIXEL_SPACING))
    if pixel_spacing is not None and pixel_spacing.size == 2 and not np.all(pixel_spacing > 0):
        raise InputError(f"The images of {label} have a PixelSpacing (0028,0030) of "
                         f"{tuple(float(x) for x in pixel_spacing)} mm; spacing must be positive.", "-")
    positions = None
    normal_lps = None
    if len(slices) > 1:
        if any(s.position is None for s in slices) or slices[0].orientation is None:
            raise InputError(f"The images of {label} lack ImagePositionPatient/ImageOrientationPatient "
                             "(0020,0032/0037), so the slice geometry is unknown.", "-")
        row = slices[0].orientation[:3]
        col = slices[0].orientation[3:]
        normal_lps = np.cross(row, col)
        if np.linalg.norm(normal_lps) < 0.5:
            raise InputError(f"The ImageOrientationPatient of {label} is degenerate (row and column directions "
                             "are parallel).", "-")
        normal_lps = normal_lps / np.linalg.norm(normal_lps)
        slices.sort(key=lambda s: float(s.position @ normal_lps))
        positions = np.array([float(s.position @ normal_lps) for s in slices])
        steps = np.diff(positions)
        if np.any(steps <= POSITION_TOLERANCE_MM):
            same = int(np.count_nonzero(steps <= POSITION_TOLERANCE_MM))
            raise InputError(f"{same} image(s) of {label} lie at the same slice position as another "
                             "image (several acquisitions, phases or echoes mixed in one series), so they do not "
                             "form one volume.", "-")
        check_tilt(slices, normal_lps, label, notes)
    files = [s.path for s in slices]
    if len(files) == 1:
        notes.append("DICOM: the series is a single (multi-frame) file; its slice geometry is taken from the "
                     "file's header as interpreted by GDCM. Check the slice spacing before measuring.")
    slopes = {tag_float(s.header.get("0028|1053", "1")) for s in slices}
    intercepts = {tag_float(s.header.get("0028|1052", "0")) for s in slices}
    float_voxels = len(slopes) > 1 or len(intercepts) > 1
    if float_voxels:
        notes.append("DICOM: RescaleSlope/RescaleIntercept differ between slices; each slice was converted to "
                     "HU with its own values.")
        facts.pop("rescale_slope", None)
        facts.pop("rescale_intercept", None)
    elif "rescale_slope" not in facts and "rescale_intercept" not in facts:
        notes.append("DICOM: the series has no RescaleSlope/RescaleIntercept; stored values are taken as HU.")
    return files, facts, positions, normal_lps, float_voxels, label


# --- random slice headers ---------------------------------------------------------------------


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _fmt(values, rng: random.Random) -> str:
    style = rng.choice(["{:.6f}", "{:g}", "{!r}", "{:.3f}"])
    text = "\\".join(style.format(float(v)) for v in values)
    return text + rng.choice(["", " ", "\x00"])


def _random_headers(seed: int) -> List:
    """A random series' headers: usual series plus duplicates, localizers, missing/odd tags, tilt, rescale."""
    rng = random.Random(seed)
    npr = np.random.default_rng(seed)
    n = rng.choice([1, 2, 3, 5, 12, 40])
    row = _unit(npr.normal(size=3)) if rng.random() < 0.4 else np.array([1.0, 0.0, 0.0])
    col = np.cross(_unit(npr.normal(size=3)), row) if rng.random() < 0.4 else np.array([0.0, 1.0, 0.0])
    col = _unit(col - row * float(row @ col))
    normal = np.cross(row, col)
    step = rng.choice([0.5, 1.0, 1.25, 2.5, -1.0])
    shift = npr.normal(size=3) * rng.choice([0.0, 0.0, 0.001, 0.3])  # gantry tilt / stacking off the normal
    origin = npr.normal(size=3) * 100
    gaps = [0.0] * n
    if rng.random() < 0.2 and n > 3:
        gaps[rng.randrange(1, n)] = step  # a missing slice
    if rng.random() < 0.1 and n > 2:
        gaps[rng.randrange(1, n)] = -step  # two slices at the same position
    z = np.cumsum([step + g for g in gaps])
    kvp = rng.choice(["120 ", "100", "", None])
    per_slice_kvp = rng.random() < 0.3
    rescale = rng.choice([("1", "-1024"), ("1 ", "-1024 "), None])
    per_slice_slope = rng.random() < 0.2
    headers = []
    for k in range(n):
        ipp = origin + z[k] * normal + k * shift
        h: Dict[str, str] = {
            TAG_SOP_INSTANCE_UID: f"1.2.3.{seed}.{k}" + rng.choice(["", " ", "\x00"]),
            TAG_IPP: _fmt(ipp, rng),
            TAG_IOP: _fmt(list(row) + list(col), rng),
            TAG_ROWS: "512",
            TAG_COLUMNS: "512",
            TAG_PIXEL_SPACING: rng.choice(["0.7\\0.7 ", "0.8\\0.6", "0\\0.7", "-0.5\\0.5", ""]) if k == 0 and
            rng.random() < 0.3 else "0.7\\0.7",
            "0008|0060": "CT",
            "0008|103e": f"desc {k % 2 if rng.random() < 0.2 else 0}",
            "0020|000e": "1.2.3",
            TAG_GANTRY_TILT: rng.choice(["12", "0", " ", "x"]),
            "0018|0050": "1 ",
        }
        if kvp is not None:
            h["0018|0060"] = f"{80 + 10 * k}" if per_slice_kvp else kvp
        if rescale is not None:
            h["0028|1053"] = f"{1 + (k % 2) * 0.5:g}" if per_slice_slope else rescale[0]
            h["0028|1052"] = rescale[1]
        headers.append([f"f{k:03d}.dcm", h])
    # oddities
    for _ in range(rng.choice([0, 0, 1, 2, 4])):
        kind = rng.choice(["dup", "none", "loc", "size", "noipp", "badipp", "nan", "noiop", "iop5", "nearly"])
        k = rng.randrange(n)
        h = dict(headers[k][1])
        if kind == "dup":
            headers.append([f"dup{k}.dcm", h])
        elif kind == "none":
            headers.append([f"bad{k}.dcm", None])
        elif kind == "loc":
            h[TAG_IOP] = "1\\0\\0\\0\\0\\-1"
            h[TAG_SOP_INSTANCE_UID] = f"loc{seed}.{k}"
            headers.append([f"loc{k}.dcm", h])
        elif kind == "size":
            h[TAG_ROWS] = "256"
            h[TAG_SOP_INSTANCE_UID] = f"size{seed}.{k}"
            headers.append([f"size{k}.dcm", h])
        elif kind == "noipp":
            headers[k][1].pop(TAG_IPP, None)
        elif kind == "badipp":
            headers[k][1][TAG_IPP] = rng.choice(["1\\2", "a\\b\\c", "1\\2\\3\\4", ""])
        elif kind == "nan":
            headers[k][1][TAG_IPP] = rng.choice(["nan\\0\\0", "1e400\\0\\0", "inf\\1\\2"])
        elif kind == "noiop":
            for hh in headers:
                if hh[1] is not None:
                    hh[1].pop(TAG_IOP, None)
        elif kind == "iop5":
            headers[k][1][TAG_IOP] = "1\\0\\0\\0\\1"
        else:  # orientation within / just beyond the tolerance of the first slice
            iop = [float(x) for x in clean_text(headers[k][1].get(TAG_IOP, "1\\0\\0\\0\\1\\0")).split("\\")] + [0.0] * 6
            iop = iop[:6]
            iop[rng.randrange(6)] += rng.choice([0.5, 1.5, 0.999, 1.001]) * ORIENTATION_TOLERANCE
            headers[k][1][TAG_IOP] = "\\".join(repr(x) for x in iop)
    if rng.random() < 0.5:
        rng.shuffle(headers)
    return [(f, h) for f, h in headers]


def _series():
    return DicomSeries(uid="1.2.3", files=["x"], header={"0008|0060": "CT", "0008|103e": "test"})


def _outcome(fn):
    notes: List[str] = []
    try:
        result = fn(notes)
    except InputError as exc:
        return ("error", exc.problem, notes)
    return ("ok", result, notes)


def _new_plan(headers, complete=None):
    def run(notes):
        p = dicom_series.plan_series(_series(), headers, notes, complete)
        return p.files, p.facts, p.positions, p.normal_lps, p.float_voxels, p.label
    return run


def _same(a, b) -> None:
    assert a[0] == b[0], (a, b)
    assert a[2] == b[2]  # notes, in order, word for word
    if a[0] == "error":
        assert a[1] == b[1]
        return
    (f1, facts1, pos1, n1, fv1, lab1), (f2, facts2, pos2, n2, fv2, lab2) = a[1], b[1]
    assert f1 == f2 and facts1 == facts2 and fv1 == fv2 and lab1 == lab2
    for x, y in ((pos1, pos2), (n1, n2)):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()  # bit-identical


@pytest.mark.parametrize("chunk", range(4))
def test_plan_series_equals_reference(chunk):
    kinds = set()
    for seed in range(chunk * 150, (chunk + 1) * 150):
        headers = _random_headers(seed)
        copies = [(f, None if h is None else dict(h)) for f, h in headers]
        expected = _outcome(lambda notes, copies=copies: _reference_plan_series(_series(), copies, notes))
        kinds.add(expected[0])
        _same(_outcome(_new_plan([(f, None if h is None else dict(h)) for f, h in headers])), expected)
        # Only the per-slice tags read up front, the rest completed for the reported slices.
        full = [None if h is None else {t: h[t] for t in HEADER_TAGS if t in h} for _, h in headers]
        partial = [(f, None if h is None else {t: h[t] for t in SLICE_TAGS if t in h})
                   for (f, _), h in zip(headers, full)]
        asked: List[int] = []

        def complete(index, full=full, asked=asked):
            asked.append(index)
            return dict(full[index])

        _same(_outcome(_new_plan(partial, complete)), expected)
        assert len(asked) <= 2  # the first slice (facts) and the first in slice order (tilt)
    assert kinds == {"ok", "error"}  # the cases exercise both outcomes


def test_float_list_equals_reference():
    rng = random.Random(5)
    texts = [None, "", " ", "1", "1\\2\\3", "1\\\\2", " 1 \\ 2 ", "1e400", "nan", "-inf\\1", "a", "1\\b", "\x001\\2\x00",
             "1_000\\2", "0x10", "1e-320\\5"]
    for _ in range(300):
        texts.append("\\".join(rng.choice(["1", "-0", " 2.5", "3e2 ", "", " ", "1e999", "nan", "q"])
                               for _ in range(rng.randrange(1, 7))))
    for text in texts:
        got, want = dicom_facts.tag_floats(text), _reference_floats(text)
        assert (got is None) == (want is None), text
        if want is not None:
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), text


# --- reference: the previous roi_voxels -------------------------------------------------------


def _reference_roi_voxels(shape, ijk_to_ras, dimensions):
    m = np.asarray(ijk_to_ras, dtype=float)
    lo, hi = bounding_box_ijk(shape, m)
    if np.any(hi < lo):
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, empty, 0
    frame = np.array([shape.axis_u, shape.axis_v, np.cross(shape.axis_u, shape.axis_v)])
    a = frame @ m[:3, :3]
    o = frame @ (m[:3, 3] - np.asarray(shape.center))
    ii = np.arange(lo[0], hi[0] + 1, dtype=float)
    jj = np.arange(lo[1], hi[1] + 1, dtype=float)
    kk = np.arange(lo[2], hi[2] + 1, dtype=float)
    coords = [
        a[r, 0] * ii[None, None, :] + a[r, 1] * jj[None, :, None] + a[r, 2] * kk[:, None, None] + o[r]
        for r in range(3)
    ]
    mask = inside_mask(shape, *coords)
    kx, jx, ix = (np.asarray(x, dtype=np.intp) for x in np.nonzero(mask))
    kx += lo[2]
    jx += lo[1]
    ix += lo[0]
    ni, nj, nk = (int(d) for d in dimensions)
    valid = (ix >= 0) & (ix < ni) & (jx >= 0) & (jx < nj) & (kx >= 0) & (kx < nk)
    return kx[valid], jx[valid], ix[valid], int(valid.size - np.count_nonzero(valid))


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def test_roi_voxels_equals_reference():
    rng = np.random.default_rng(11)
    clipped = inside = 0
    for case in range(600):
        direction = np.eye(3) if case % 3 == 0 else _random_rotation(rng)
        spacing = rng.uniform(0.3, 3.0, size=3) if case % 2 else np.array([0.7, 0.7, 1.0])
        m = np.eye(4)
        m[:3, :3] = direction * spacing
        m[:3, 3] = rng.uniform(-50, 50, size=3)
        dims = tuple(int(d) for d in rng.integers(5, 60, size=3))
        centre_ijk = rng.uniform(-5, np.array(dims) + 5)
        u = _random_rotation(rng)
        shape = RoiShape(
            kind="ellipse" if case % 2 else "rectangle",
            center=tuple(m[:3, :3] @ centre_ijk + m[:3, 3]),
            axis_u=tuple(u[:, 0]), axis_v=tuple(u[:, 1]),
            half_u=float(rng.uniform(0.2, 20)), half_v=float(rng.uniform(0.2, 20)),
            slab_mm=float(rng.choice([spacing.min(), rng.uniform(0.1, 10)])),
        )
        got = roi_voxels(shape, m, dims)
        k, j, i, n_out = _reference_roi_voxels(shape, m, dims)
        assert np.array_equal(got.k, k) and np.array_equal(got.j, j) and np.array_equal(got.i, i)
        assert got.k.dtype == k.dtype and got.n_outside == n_out
        clipped += n_out > 0
        inside += got.count > 0
    assert clipped > 50 and inside > 300  # both kinds of case occurred


# --- check_ct's block scan --------------------------------------------------------------------


def _reference_lowest(a: np.ndarray) -> float:
    return float(a.min())


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint8, np.uint16, np.bool_])
def test_check_ct_integer_scan_equals_full_minimum(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if dtype is not np.bool_ else None
    for case in range(40):
        shape = tuple(int(x) for x in rng.integers(1, 9, size=3)) if case % 4 else (int(rng.integers(1, 40)), 80, 70)
        lo = max(-2000, info.min) if info else 0
        hi = min(3000, info.max) if info else 2
        a = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
        if case % 3 == 0 and info is not None and info.min < 0:
            a[a < CT_MIN_HU_REQUIRED] = 0  # no air anywhere: the full minimum is reported
        if case % 5 == 0:
            a = a[:, ::-1, ::2]  # not contiguous
        if case % 7 == 0 and a.shape[0] > 1 and info is not None and info.min < 0:
            a = np.array(a)
            a[-1, 0, 0] = -1000  # air only in the last slice
        vol = Volume(array=a, ijk_to_ras=np.eye(4))
        want = _reference_lowest(a)

        def outcome(vol=vol):
            try:
                check_ct(vol)
            except InputError as exc:
                return exc.problem
            return None

        got = outcome()
        if want >= CT_MIN_HU_REQUIRED:
            assert got is not None and f"its lowest value is {want:g}," in got
        else:
            # random voxels are no anatomy: the HU-scale check may refuse them, never for "no air"
            assert got is None or "lowest value" not in got


def test_check_ct_block_scan_stops_at_air_but_finds_it_anywhere():
    a = np.zeros((300, 64, 64), np.int16)
    a[123, 5, 7] = -1000
    check_ct(Volume(array=a, ijk_to_ras=np.eye(4)))  # air in one voxel of a middle block
    a[123, 5, 7] = -500
    with pytest.raises(InputError, match="lowest value is -500,"):
        check_ct(Volume(array=a, ijk_to_ras=np.eye(4)))


# --- json_safe --------------------------------------------------------------------------------


def _reference_json_safe(value, digits: Optional[int] = None):
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {str(k): _reference_json_safe(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [_reference_json_safe(v, digits) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else value
    return value


def test_json_safe_equals_reference():
    rng = random.Random(8)

    class Sub(float):
        pass

    from collections import OrderedDict

    leaves = [0, 1, -7, True, False, None, "a", "", 1.5, -0.0, 1e-9, 123.4567891234, float("nan"), float("inf"),
              np.float64(2.123456789), np.float32(0.1), np.int64(3), np.bool_(True), np.array([1.25, np.nan]),
              Sub(2.0000004), b"x", 10 ** 20]

    def build(depth):
        r = rng.random()
        if depth <= 0 or r < 0.4:
            return rng.choice(leaves)
        if r < 0.6:
            return {rng.choice(["a", 1, "b", 2.5]): build(depth - 1) for _ in range(rng.randrange(4))}
        if r < 0.7:
            return OrderedDict((str(i), build(depth - 1)) for i in range(rng.randrange(3)))
        if r < 0.85:
            return [build(depth - 1) for _ in range(rng.randrange(4))]
        return tuple(build(depth - 1) for _ in range(rng.randrange(4)))

    for _ in range(500):
        doc = build(4)
        for digits in (None, 6):
            got, want = outputs.json_safe(doc, digits), _reference_json_safe(doc, digits)
            assert repr(got) == repr(want)
            assert [type(x) for x in _leaves(got)] == [type(x) for x in _leaves(want)]


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value
