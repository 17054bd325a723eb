"""The digital CT phantom: L1–L4 of known density on a calibration phantom, with its truth.

A sample generator for ``osteoroi demo``, the self-test, the tests and the benchmarks. The measuring
pipeline never imports it, so ground truth cannot leak into a measurement. Everything is defined
analytically in physical **RAS millimetres** (x → patient right, y → anterior, z → superior),
independently of the voxel grid; the image *samples* that anatomy on a grid of any spacing and
orientation (RAS, LPS or oblique direction cosines).

Quick use::

    from OsteoROILib.digital_phantom import make_phantom
    volume, truth = make_phantom()                     # small, noise-free, < 1 s
    volume, truth = make_phantom(noise_sigma=15, seed=3, supersample=3, orientation="LPS")
    l1 = truth.level("L1")
    outline = l1.outline()                             # roi.outline.BodyOutline of L1's mid plane
    truth.to_dict()                                    # JSON-friendly ground truth

Modules: ``spec`` (the options), ``column`` (the vertebral column), ``anatomy`` (the whole analytic
model: patient, calibration phantom, table), ``render`` (sampling it on a grid), ``truth`` (what a
generated phantom holds).

Anatomy (all sizes settable, see :class:`~.spec.PhantomSpec`)
-------------------------------------------------------------
* **Vertebral bodies** L1–L4 (top to bottom), stacked along S with intervertebral **discs**
  (``disc_hu``) between them; the column shares one axis at ``spine_center_ras`` (x, y).
  Each body is a prism along S whose axial cross-section is a superellipse
  ``|s/a|^p + |t/b|^p ≤ 1`` (``p = body_exponent``; 2 = ellipse, larger = boxier) with
  ``a = depth/2`` along the body's AP axis ``s`` (towards anterior) and ``b = width/2`` along
  ``t`` (towards the patient's left). The body spans ``|z − z_c| ≤ height/2``.
* **Cortical shell**: the **trabecular** interior is the superellipse with semi-axes
  ``a − cortical_mm`` and ``b − cortical_mm`` (exactly the inner boundary that
  :class:`~OsteoROILib.roi.outline.BodyOutline` assumes), between the endplates shrunk by
  ``endplate_mm``; the rest of the body is cortex (``cortical_hu``).
* **Axial rotation** ``rotation_deg`` per level, about +S (right-hand rule, seen from the head):
  a positive angle turns the anterior direction from +A towards the patient's **left** (−R);
  the AP axis is ``(−sin θ, cos θ, 0)``. Body, disc, canal and posterior elements rotate together.
* **Spinal canal** (``canal_hu``, fluid): an elliptic tube directly posterior to the body
  (touching its posterior surface), continuous through all levels and discs.
* **Posterior elements** (``posterior_hu``, dense bone): a neural arch (pedicles and laminae)
  around the canal, a spinous process pointing posteriorly and two transverse processes,
  each over the central 80 % of the body's height.
* **Context vertebrae** (``context_vertebrae``): one more body above (T12) and below (L5), copies
  of the first/last level, so that a large field of view shows a continuing spine; beyond
  them the column continues as disc material. They are in ``truth.context_levels``, not in
  ``truth.levels``.
* **Soft tissue**: an elliptic body contour (``body_semi_axes_mm``, centre ``body_center_ras``)
  of subcutaneous fat (``fat_hu``) ``fat_mm`` thick (at the ends of the axes; the inner contour is
  the ellipse with semi-axes reduced by ``fat_mm``) around muscle/soft tissue (``muscle_hu``),
  an aorta (``blood_hu``) anterior-left of the spine; air (``air_hu``) outside.
* **Calibration phantom** (``calibration_phantom``): a water-equivalent block (``block_hu``)
  under the patient (posterior, towards P) holding rods (cylinders along S) of known mineral
  density; and a patient **table** (``table_hu``) under it.

Scanner model
-------------
Mineral densities map to HU linearly, ``HU = intercept + slope × density`` (``scanner_slope``
HU per mg/cm³, ``scanner_intercept`` HU), for the trabecular bone of each level and for the
rods; the density unit is ``density_unit`` (e.g. "mg/cm3 HA" or "mg/cm3 K2HPO4"). The truth gives
both ``trabecular_density`` and ``trabecular_hu`` for each level and ``density`` and
``expected_hu`` for each rod. If ``rod_water_densities`` are given (Mindways-style two-component
rods, QCT_BRIEF §4), a rod's HU is instead
``(ρ_water − 999.6) + (slope + 0.2174)·ρ_K2HPO4 + intercept``, i.e. the rods follow the Mindways
model whose σ_CT, β_CT are exactly ``scanner_slope``/``scanner_intercept``. All other tissues are
given directly in HU. Optional additive Gaussian noise (``noise_sigma`` HU, ``seed``) is added to
every voxel; it is deterministic: voxel slice ``k`` uses ``numpy.random.default_rng([seed, k])``.

Sampling
--------
``supersample = f`` averages f×f×f sub-samples per voxel (partial-volume edges). Only voxels
whose 3×3×3 neighbourhood of voxel-centre values is not uniform are supersampled (a boundary
crossing a voxel always separates two of those 27 centres, unless a feature thinner than a voxel
separates identical materials, which this anatomy does not have at sensible spacings); all other
voxels take the value at their centre. Hence noise-free **interior voxels equal the configured
HU exactly** (in the stored dtype: ``numpy.float32(hu)``, or ``round(hu)`` for int16). With
``supersample = 1`` every voxel is its centre's value. The volume is built slab by slab
(a few slices at a time, optionally on several threads); no full-size float64 array is made.

Grid
----
``spacing`` (i, j, k) mm; ``orientation`` "RAS" (i→R, j→A, k→S), "LPS" (i→L, j→P, k→S, the usual
DICOM axial layout), "oblique" (LPS rotated by ``oblique_degrees`` about R, A and S) or an explicit
3×3 direction matrix (columns: RAS directions of i, j, k). By default the grid covers the
anatomy's bounding box (``extent_ras``) and is shifted (by less than a voxel) so that the first
level's centre is a voxel centre (``snap_to_level``); with the default 25 mm bodies and 10 mm discs
the levels are 35 mm apart, a multiple of the default 2.5 mm slices, so every mid-vertebral
plane of the default phantom is a voxel-centre slice. The truth gives each level's nearest slice
(``mid_slice_index``) and how far the mid plane is from it (``mid_slice_offset_mm``) for any grid.
"""
from ..import_paths import stage_getattr

__all__ = ["make_phantom", "generate", "analytic_hu", "PhantomSpec", "CALIBRATION_PRESETS", "PhantomTruth",
           "LevelTruth", "RodTruth", "ScannerTruth", "superellipse_polygon"]
__getattr__ = stage_getattr(__name__, {
    "make_phantom": "render", "generate": "render", "analytic_hu": "render",
    "PhantomSpec": "spec", "CALIBRATION_PRESETS": "spec",
    "PhantomTruth": "truth", "LevelTruth": "truth", "RodTruth": "truth", "ScannerTruth": "truth",
    "superellipse_polygon": "truth",
})
