"""Rendering the digital phantom: sampling its anatomy on a voxel grid, with partial volume and noise.

``generate(spec)`` builds the image slab by slab (a few slices at a time, optionally on several
threads; no full-size float64 array is made): each voxel takes the anatomy's value at its centre,
or, where its 3×3×3 neighbourhood of centre values is not uniform, the mean of ``supersample``³
sub-samples; seeded Gaussian noise is added per slice. ``make_phantom(**options)`` is
``generate(PhantomSpec(**options))``; the truth is read off the model and the grid.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from .artefacts import add_streaks, check_streaks
from ..io.volume import Volume
from .anatomy import PhantomModel
from .spec import PhantomSpec, direction_matrix, positive_option
from .truth import LevelTruth, PhantomTruth, RodTruth, ScannerTruth


def voxel_grid(spec: PhantomSpec, model: PhantomModel) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    """(IJK→RAS matrix, (ni, nj, nk)) of the image grid: ``spacing`` and ``orientation``, covering
    ``extent_ras`` (default: the model's), shifted by < 1 voxel to put the first level's centre on a voxel
    centre (``snap_to_level``)."""
    spacing = np.array([positive_option(v, "spacing") for v in spec.spacing], dtype=float)
    if spacing.size != 3:
        raise InputError("spacing needs three values (i, j, k) in mm.", "Give e.g. spacing=(1.0, 1.0, 2.5).")
    d = direction_matrix(spec.orientation, spec.oblique_degrees)
    m3 = d @ np.diag(spacing)
    inv3 = np.linalg.inv(m3)
    if spec.extent_ras is not None:
        ext = np.asarray(spec.extent_ras, dtype=float)
        if ext.shape != (3, 2) or not np.all(ext[:, 1] > ext[:, 0]):
            raise InputError(
                "extent_ras must be ((xmin, xmax), (ymin, ymax), (zmin, zmax)) with min < max.",
                "Give the RAS box (mm) the image must cover.",
            )
    else:
        ext = model.default_extent()
    center = np.asarray(spec.center_ras, dtype=float) if spec.center_ras is not None else ext.mean(axis=1)
    if spec.size is not None:
        size = np.array([int(v) for v in spec.size])
        if size.size != 3 or np.any(size < 1):
            raise InputError("size must be three positive integers (ni, nj, nk).", "Give e.g. size=(256, 256, 100).")
    else:
        corners = np.array([[ext[0, a], ext[1, b], ext[2, c]] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        u = (corners - center) @ inv3.T
        half = np.max(np.abs(u), axis=0)
        size = np.ceil(2.0 * half - 1e-9).astype(int) + 1
        if spec.snap_to_level:
            size = size + 1  # room for the < 1 voxel shift
    origin = center - m3 @ ((size - 1) / 2.0)
    if spec.snap_to_level:
        ref = np.array([model.column.x0, model.column.y0, model.levels[1 if spec.context_vertebrae else 0]["z"]])
        ref = model.column.tilted(ref)
        ijk = inv3 @ (ref - origin)
        frac = ijk - np.round(ijk)
        origin = origin + m3 @ frac
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = m3
    ijk_to_ras[:3, 3] = origin
    n_vox = int(np.prod(size.astype(np.int64)))
    if n_vox > 2_000_000_000:
        raise InputError(f"The phantom grid would have {n_vox} voxels.", "Use a coarser spacing or a smaller size.")
    return ijk_to_ras, (int(size[0]), int(size[1]), int(size[2]))


def _subsample_offsets(f: int) -> np.ndarray:
    g = (np.arange(f) + 0.5) / f - 0.5
    kk, jj, ii = np.meshgrid(g, g, g, indexing="ij")
    return np.column_stack([ii.ravel(), jj.ravel(), kk.ravel()])


def _neighbourhood_nonuniform(stack: np.ndarray) -> np.ndarray:
    """For a (≤3, nj, ni) stack of centre values: True where the 3×3×3 neighbourhood of the
    middle slice's voxel is not uniform (neighbours beyond the volume are ignored)."""
    mx = stack.max(axis=0)
    mn = stack.min(axis=0)

    def filt(a, op):  # separable 3×3 max/min; the copies keep the shifts independent
        b = a.copy()
        op(b[1:, :], a[:-1, :], out=b[1:, :])
        op(b[:-1, :], a[1:, :], out=b[:-1, :])
        c = b.copy()
        op(c[:, 1:], b[:, :-1], out=c[:, 1:])
        op(c[:, :-1], b[:, 1:], out=c[:, :-1])
        return c

    return filt(mx, np.maximum) != filt(mn, np.minimum)


class _SlabRenderer:
    """Fills ``out`` (nk, nj, ni) slice by slice from the model: centre values, supersampled edges,
    noise, then the stored dtype."""

    def __init__(self, model: PhantomModel, ijk_to_ras: np.ndarray, size: Tuple[int, int, int], f: int,
                 sigma: float, seed: int, dtype_name: str):
        ni, nj, nk = size
        self.model, self.f, self.sigma, self.seed, self.dtype_name = model, f, sigma, seed, dtype_name
        self.ni, self.nj, self.nk = ni, nj, nk
        self.m3, self.origin = ijk_to_ras[:3, :3], ijk_to_ras[:3, 3]
        self.out = np.empty((nk, nj, ni), dtype=np.float32 if dtype_name == "float32" else np.int16)
        m3 = self.m3
        jj, ii = np.meshgrid(np.arange(nj, dtype=float), np.arange(ni, dtype=float), indexing="ij")
        self.plane = [m3[r, 0] * ii + m3[r, 1] * jj for r in range(3)]  # (nj, ni) each
        del jj, ii
        self.offsets_ras = _subsample_offsets(f) @ m3.T if f > 1 else None

    def centre_slice(self, k: int) -> np.ndarray:
        plane, origin, m3 = self.plane, self.origin, self.m3
        x = (plane[0] + (origin[0] + m3[0, 2] * k)).ravel()
        y = (plane[1] + (origin[1] + m3[1, 2] * k)).ravel()
        z = (plane[2] + (origin[2] + m3[2, 2] * k)).ravel()
        return self.model.hu(x, y, z).reshape(self.nj, self.ni)

    def supersampled(self, k: int, values: np.ndarray, edge: np.ndarray) -> None:
        """Replace the ``edge`` voxels of slice ``k`` by the mean of their sub-samples."""
        plane, origin, m3, offsets_ras = self.plane, self.origin, self.m3, self.offsets_ras
        je, ie = np.nonzero(edge)
        if je.size == 0:
            return
        per = offsets_ras.shape[0]
        chunk = max(1, 500_000 // per)
        for a in range(0, je.size, chunk):
            jb, ib = je[a:a + chunk], ie[a:a + chunk]
            coords = []
            for r in range(3):  # RAS of the voxel centres, then of their sub-samples
                c = plane[r][jb, ib] + (origin[r] + m3[r, 2] * k)
                coords.append((c[:, None] + offsets_ras[None, :, r]).ravel())
            vals = self.model.hu(*coords).reshape(-1, per)
            values[jb, ib] = vals.mean(axis=1)

    def finish(self, k: int, values: np.ndarray) -> None:
        """Add slice ``k``'s noise (``default_rng([seed, k])``) and store it in the output dtype."""
        if self.sigma > 0:
            rng = np.random.default_rng([self.seed, k])
            values = values + self.sigma * rng.standard_normal((self.nj, self.ni))
        if self.dtype_name == "int16":
            self.out[k] = np.clip(np.rint(values), -32768, 32767).astype(np.int16)
        else:
            self.out[k] = values.astype(np.float32)

    def run_chunk(self, k0: int, k1: int) -> None:
        """Render slices k0 … k1 − 1 (the centre slices of their neighbours are computed too)."""
        nk = self.nk
        if self.f == 1:
            for k in range(k0, k1):
                self.finish(k, self.centre_slice(k))
            return
        lo, hi = max(0, k0 - 1), min(nk, k1 + 1)
        cache = {k: self.centre_slice(k) for k in range(lo, min(hi, k0 + 2))}
        for k in range(k0, k1):
            if k + 1 < hi and (k + 1) not in cache:
                cache[k + 1] = self.centre_slice(k + 1)
            stack = np.stack([cache[q] for q in (k - 1, k, k + 1) if q in cache])
            values = cache[k].copy()
            self.supersampled(k, values, _neighbourhood_nonuniform(stack))
            self.finish(k, values)
            cache.pop(k - 1, None)


def _sampling_options(spec: PhantomSpec) -> Tuple[int, float, int, str]:
    """(supersample, noise sigma, seed, dtype name), each checked."""
    f = int(spec.supersample)
    if f != spec.supersample or f < 1 or f > 8:
        raise InputError(f"supersample must be an integer from 1 to 8, got {spec.supersample!r}.",
                         "Use 1 (no partial volume) or e.g. 3.")
    sigma = float(spec.noise_sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InputError("noise_sigma must be ≥ 0.", "Give the noise SD in HU (0 = noise-free).")
    seed = int(spec.seed)
    if seed < 0:
        raise InputError("seed must be a non-negative integer.", "Give e.g. seed=0.")
    dtype_name = str(spec.dtype).lower()
    if dtype_name not in ("float32", "int16"):
        raise InputError(f"Unknown phantom dtype {spec.dtype!r}.", 'Use "float32" or "int16".')
    return f, sigma, seed, dtype_name


def _render_slabs(renderer: _SlabRenderer, workers: Optional[int]) -> None:
    """Render every slice, in slabs of up to 16 slices, on ``workers`` threads (default min(2, CPUs))."""
    nk = renderer.nk
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    workers = max(1, int(workers))
    chunk = max(1, min(16, -(-nk // (workers * 2))))
    bounds = [(k, min(nk, k + chunk)) for k in range(0, nk, chunk)]
    if workers == 1 or len(bounds) == 1:
        for k0, k1 in bounds:
            renderer.run_chunk(k0, k1)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(renderer.run_chunk, k0, k1) for k0, k1 in bounds]:
                fut.result()


def generate(spec: Optional[PhantomSpec] = None) -> Tuple[Volume, PhantomTruth]:
    """Build the phantom image and its ground truth from a :class:`PhantomSpec`."""
    spec = spec if spec is not None else PhantomSpec()
    model = PhantomModel(spec)
    f, sigma, seed, dtype_name = _sampling_options(spec)
    ijk_to_ras, size = voxel_grid(spec, model)
    renderer = _SlabRenderer(model, ijk_to_ras, size, f, sigma, seed, dtype_name)
    _render_slabs(renderer, spec.workers)
    volume = Volume(
        array=renderer.out,
        ijk_to_ras=ijk_to_ras,
        source="osteoroi-phantom",
        facts={"modality": "CT"},
        notes=["Digital phantom generated by OsteoROILib.digital_phantom (synthetic, not patient data)."],
    )
    add_streaks(volume, check_streaks(spec.streaks, spec.spine_center_ras))
    truth = phantom_truth(spec, model, volume)
    return volume, truth


def _with_slice(lv: LevelTruth, volume: Volume) -> LevelTruth:
    """The level with its nearest image slice, that slice's offset from the mid plane and its centre voxel."""
    ijk = volume.ras_to_ijk_points(lv.center_ras)[0]
    ax = volume.slice_axis()
    k = int(np.round(ijk[ax]))
    sign = 1.0 if volume.direction[2, ax] >= 0 else -1.0
    lv.mid_slice_index = k
    lv.mid_slice_offset_mm = float((ijk[ax] - k) * volume.spacing[ax] * sign)
    lv.center_ijk = tuple(int(v) for v in np.round(ijk))
    return lv


def phantom_truth(spec: PhantomSpec, model: PhantomModel, volume: Volume) -> PhantomTruth:
    """The ground truth of the phantom ``model`` imaged on ``volume``'s grid."""
    main = [_with_slice(model.level_truth(d), volume) for d in model.levels if not d["context"]]
    main.sort(key=lambda lv: -lv.center_ras[2])
    context = [_with_slice(model.level_truth(d), volume) for d in model.levels if d["context"]]
    up = np.array([0.0, 0.0, 1.0])
    z_mid = float(main[0].center_ras[2])
    rods = [
        RodTruth(name=r["name"], density=r["density"], unit=model.unit, expected_hu=r["hu"], radius_mm=r["r"],
                 center_ras=np.array([r["x"], r["y"], z_mid]), direction_ras=up.copy(), water_density=r["water"])
        for r in model.rods
    ]
    scanner = ScannerTruth(slope=model.slope, intercept=model.intercept, density_unit=model.unit,
                           noise_sigma=float(spec.noise_sigma), seed=int(spec.seed), supersample=int(spec.supersample))
    if any(r.water_density is not None for r in rods):
        scanner.model = ("HU = intercept + slope * density (bone); rods: HU = (water_density - 999.6) + "
                         "(slope + 0.2174) * density + intercept (Mindways two-component)")
    body = {
        "center_ras": [model.bx, model.by], "semi_axes_mm": [model.rx, model.ry], "fat_mm": model.fat,
        "aorta_center_ras": [model.ax_, model.ay_] if spec.aorta else None,
        "aorta_radius_mm": model.ar if spec.aorta else None,
    }
    block = None
    if model.block is not None:
        b = model.block
        block = {"x_range": [b["x0"], b["x1"]], "y_range": [b["y0"], b["y1"]], "hu": b["hu"]}
    return PhantomTruth(levels=main, context_levels=context, rods=rods, scanner=scanner,
                        tissues=_tissues(spec, model), landmarks=_landmarks(spec, model, main, z_mid), body=body,
                        calibration_block=block, spec=spec)


def _tissues(spec: PhantomSpec, model: PhantomModel) -> Dict[str, float]:
    """The HU of every material of the phantom."""
    tissues = {
        "air": float(spec.air_hu), "subcutaneous_fat": float(spec.fat_hu), "muscle": float(spec.muscle_hu),
        "blood": float(spec.blood_hu), "disc": float(spec.disc_hu), "spinal_canal": float(spec.canal_hu),
        "posterior_elements": float(spec.posterior_hu),
    }
    if model.table is not None:
        tissues["table"] = model.table["hu"]
    if model.block is not None:
        tissues["calibration_block"] = model.block["hu"]
    return tissues


def _landmarks(spec: PhantomSpec, model: PhantomModel, main: List[LevelTruth], z_mid: float) -> Dict[str, List[float]]:
    """RAS points inside uniform tissue at the first level's mid plane (e.g. for internal calibration)."""
    col = model.column
    fat_y = model.by + model.ry - model.fat / 2.0  # anterior subcutaneous fat
    mus_x = col.x0 + col.rct + col.arch + col.transverse + 15.0
    landmarks = {
        "air": [model.bx, model.by + model.ry + 5.0, z_mid],
        "subcutaneous_fat": [model.bx, fat_y, z_mid],
        "paraspinal_muscle_right": [mus_x, col.y0 - col.rcs * 2 - 20.0, z_mid],
        "paraspinal_muscle_left": [-mus_x + 2 * col.x0, col.y0 - col.rcs * 2 - 20.0, z_mid],
        "spinal_canal": [col.x0, col.y0 - main[0].depth_mm / 2.0 - col.rcs, z_mid],
    }
    if col.tilt is not None:
        first = model.levels[1 if spec.context_vertebrae else 0]
        landmarks["spinal_canal"] = [float(v) for v in col.tilted(
            [col.x0 + (main[0].depth_mm / 2.0 + col.rcs) * math.sin(math.radians(first["rot"])),
             col.y0 - (main[0].depth_mm / 2.0 + col.rcs) * math.cos(math.radians(first["rot"])), first["z"]])]
    if spec.aorta:
        landmarks["aorta"] = [model.ax_, model.ay_, z_mid]
    return landmarks


def make_phantom(**options) -> Tuple[Volume, PhantomTruth]:
    """Build a phantom: ``make_phantom(**options)`` = ``generate(PhantomSpec(**options))``.

    See :class:`PhantomSpec` for every option. Returns ``(volume, truth)``.
    """
    try:
        spec = PhantomSpec(**options)
    except TypeError as exc:
        known = ", ".join(sorted(PhantomSpec.__dataclass_fields__))
        raise InputError(f"Unknown phantom option ({exc}).", f"Known options: {known}.") from None
    return generate(spec)


def analytic_hu(points_ras, spec: Optional[PhantomSpec] = None, **options) -> np.ndarray:
    """Noise-free HU of the phantom's anatomy at RAS points (N×3), without partial volume."""
    spec = spec if spec is not None else PhantomSpec(**options)
    p = np.atleast_2d(np.asarray(points_ras, dtype=float))
    return PhantomModel(spec).hu(p[:, 0].copy(), p[:, 1].copy(), p[:, 2].copy())
