"""Placement: from a click or a vertebra label to the vertebral body's mid-plane, outline and AP axis,
and from there to the measured ROI table (``measure.measure_levels``).

Automatic placement from one click (``click.place_from_click``): the vertebral body in 3-D →
mid-vertebral slice → outline. A label map says which vertebra instead (``labels``): the body
label's centre seeds the same estimate, which the label then cross-checks (``label_agreement``);
where they disagree beyond stated tolerances the label-driven fit is used, with a warning.

What a radiologist does by hand (seed 002, Methods; QCT_BRIEF §1), done around one point:

1. **Find the body on the click's slice.** Rays are cast in ``N_RAYS`` directions on the image's
   axial slice (the per-pixel median of a thin slab's slices, so noise averages out and a dense
   focus in one slice does not draw a ring inside the body). On each
   ray the *outer* edge of bone is where the HU falls most steeply (cortex → soft tissue, fat or
   spinal canal). A closed contour is chosen jointly over all rays by dynamic programming
   (each ray's edge strength, minus a penalty for radius jumps between neighbouring rays, and
   minus a penalty for an edge lying behind a stronger one: the body's wall comes before the
   neural arch or a transverse process). Rays are re-cast from the contour's centroid until it
   settles. The contour is accepted as a vertebral body only when a **cortical shell** surrounds
   the point — on most rays the profile rises above the interior before the edge and drops
   behind it — and the enclosed area is that of a lumbar body; a click just outside the cortex
   (up to ``SNAP_MM``) is found from seeds around it. The HU at the point itself is
   never used to decide (osteoporotic trabecular bone reads 30–80 HU, like muscle).
   **The spinal canal** (``find_canal``: a low-HU hole directly behind the body with bone — the
   pedicles — on both sides) fixes the posterior wall, which thick slices often do not show
   (the basivertebral foramen at mid-height has no cortex at all): rays entering the canal end
   at its front and count as shell rays, and no part of the outline lies more than
   ``POSTERIOR_CORNER_MM`` behind that front (beyond it are the pedicles, with no edge between).
   **Smoothness prior**: a robust (Tukey-weighted) Fourier curve of order ``SMOOTH_ORDER`` is
   fitted to the radii and every ray's edge is searched again within ``SMOOTH_WINDOW_MM`` of it,
   as within a segmentation label's window, so single rays stopped by a trabecular spike or
   leaking into a pedicle are pulled back. **Precision**: the ray origin moves on the slice's
   voxel-centre lattice until it repeats, so clicks a few mm apart reach the same origin and
   hence the same outline (the precision target: CV < 1 %).
2. **Endplates → mid-height.** Along the image's slice axis, the mean HU of a small central
   disc of the body is profiled over ±``CROP_HALF_AXIAL_MM``; the endplates are the profile's
   prominent peaks. The body is the interval between the nearest peak above and below the
   click; an interval without a cortical ring (an intervertebral disc, where the click may have
   landed) is skipped in favour of the nearest body, with a warning. A peak that a trimmed
   profile (densest ``PROFILE_TRIM`` of the disc left out) does not show, well inside the run of
   slices where the body's wall stays dense, is a focal lesion (bone island), not an endplate.
   The wall run is otherwise only a fallback (at thick slices a bulging disc or an osteophyte
   continues the "wall" past the endplate). At thick slices a body's own endplate can blur into
   the body and show no peak: a disc-dark valley right next to one peak, with none on its other
   side, places it as far on the other side (``endplates._hidden_plates``: a disc is symmetric). The
   mid-vertebral slice is the image's axial slice nearest the midpoint of the two endplates (as
   seed 002 did); with fewer than four slices between the endplates the row says so
   (``thick_slices``).
3. **Outline on the mid slice.** The contour is fitted again on the mid slice; the AP axis is the
   contour's minor principal axis (a lumbar body is wider than deep), signed towards the image's
   anterior — or, when the spinal canal was found, the direction from the canal's centre to the
   body's — and then averaged with the direction from the posterior elements' bone centroid
   (over ±6 mm about mid-height) to the body's centre, each weighted by its lever squared
   (``ap_axis``) — so a rotated vertebra gets rotated ROIs; the cortical thickness is the median
   distance between the inner rise and the outer edge of the shell; the trabecular boundary is
   the outer contour offset inwards by it; where a ray's edge lies well beyond its cortical rise
   (bone attached outside the cortex: an osteophyte) the outline follows the cortex instead and
   a reason says so. AP depth, width and the demarcation line follow (``roi.family``).
4. **Fit quality** in [0, 1], calibrated on known truth (``fit_quality``): the signs of trouble
   (a faint cortical edge or shell, a lopsided outline, endplates not found, an unusual size, the
   image's edge) predict how far the outline may reach into the cortex and how far the plane may
   lie from mid-height; the score is a fixed decreasing map of those errors (0.5 = the reach at
   which the ROIs start to take in cortex), with the reasons in plain words. Below
   ``LOW_QUALITY`` the trabecular region is shrunk towards its centre, continuously down to
   ``FALLBACK_SCALE`` (``landmarks.conservative_scale``: a score flickering about the cut-off moves
   the ROIs by a hair, never by a step) — a conservative ROI — and a warning asks the user to check it.
5. **The click only says which vertebra.** Steps 1–4 are made again from the body's own centre at
   mid-height (``click.vertebra_seed``) until that seed repeats, so every click inside the same body
   gives the same placement; the mid-vertebral slice is the one nearest mid-height (half way: the
   higher index), and the row says which (``mid_slice_rule``). **A disc is never a body**: an
   interval between endplates with no body ring on its middle slice, beyond the body's wall run or
   disc-dark next to brighter bone, is a disc and the click moves to the neighbouring body; a click
   on the slice holding an endplate belongs to the body side of it. A placement that settles
   fitting poorly is retried from the slices beside its seed, and the best-fitting one wins.

**Option: a QCT-style slab** (``measure_levels(slab_mm="qct")``, ``slab``): the ROIs extruded over
~10 mm centred at mid-height, thinned to stay clear of the endplates; every row records its slab.

**Option: the vertebra's own plane** (``to_vertebra_plane``, ``measure_levels(plane="vertebra")``,
``osteoroi measure --plane vertebra``): the body's axis is the line through the centroids of its
axial cross-sections about mid-height; the image is resampled (trilinear) on planes
perpendicular to it through the mid-height point and the outline is fitted there, so the ROIs'
axes and slab follow the tilted vertebra (their voxels are still the image's, chosen by centre).

Where each step lives, in the one direction of calls: ``sampling`` (the box read around the
click, interpolation, the fit cache) ← ``landmarks`` (Placement, Contour, Canal and the acceptance
limits) ← ``canal`` ← ``contour`` (step 1) ← ``endplates`` (step 2) ← ``outline_fit`` (steps 3–4)
← ``click`` (the sequence, and the click's refusals) ← ``tilted`` (the vertebra's own plane)
← ``label_agreement`` (the image's estimate against a label) ← ``labels`` (from a segmentation)
← ``measure``. ``probe`` is the simple shell-ray outline on the
point's own slice, used without automatic placement. ``aorta`` finds the aorta beside L1–L2 once per
measurement (its blood HU tells a contrast-enhanced scan; ``measure_levels`` records it).

All work is local: a box of about ±``CROP_HALF_INPLANE_MM`` in-plane and
±``CROP_HALF_AXIAL_MM`` along the slice axis around the click is read; the whole volume is
never processed.
"""
from ..import_paths import stage_getattr

__all__ = ["measure_levels", "place_from_click", "place_from_labels", "to_vertebra_plane", "probe_shell"]
__getattr__ = stage_getattr(__name__, {
    "measure_levels": "measure", "place_from_click": "click", "place_from_labels": "labels",
    "to_vertebra_plane": "tilted", "probe_shell": "probe",
})
