"""Image artefacts added to the rendered phantom: beam-hardening streaks (``PhantomSpec.streaks``).

A streak is a straight band of HU offset across every axial plane, Gaussian across its width: the
dark band a CT shows between dense structures (QCT_BRIEF §1 lists beam-hardening artefacts among
what an ROI must avoid). It is an artefact of the image, so the truth's anatomy does not hold it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from ..errors import InputError
from ..io.volume import Volume

#: FWHM = 2·sqrt(2·ln 2)·σ.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def check_streaks(streaks: Sequence[Dict[str, Any]], spine_xy: Sequence[float]) -> List[Dict[str, float]]:
    """The streaks with their defaults filled in; refuses an unknown key or a non-positive width."""
    out = []
    for i, raw in enumerate(streaks or ()):
        d = dict(raw)
        unknown = set(d) - {"angle_deg", "hu", "width_mm", "through_ras"}
        if unknown:
            raise InputError(f"streaks[{i}] has unknown keys: {', '.join(sorted(unknown))}.",
                             "Give angle_deg, hu, width_mm and through_ras.")
        width = float(d.get("width_mm", 3.0))
        if not np.isfinite(width) or width <= 0:
            raise InputError(f"streaks[{i}]: width_mm must be a positive number of mm, got {width:g}.",
                             "Give e.g. width_mm=3.")
        x, y = (float(v) for v in d.get("through_ras", spine_xy))
        out.append({"angle": np.radians(float(d.get("angle_deg", 0.0))), "hu": float(d.get("hu", -60.0)),
                    "sigma": width / FWHM_PER_SIGMA, "x": x, "y": y})
    return out


def add_streaks(volume: Volume, streaks: List[Dict[str, float]]) -> None:
    """Add the streaks to ``volume.array`` in place, slice by slice (array axis 0)."""
    if not streaks:
        return
    arr = volume.array
    nk, nj, ni = arr.shape
    jj, ii = np.mgrid[0:nj, 0:ni]
    for k in range(nk):
        ijk = np.column_stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)]).astype(float)
        ras = volume.ijk_to_ras_points(ijk)
        offset = np.zeros(ii.size)
        for s in streaks:
            # distance from the band's centre line, in the axial (x, y) plane
            d = -(ras[:, 0] - s["x"]) * np.sin(s["angle"]) + (ras[:, 1] - s["y"]) * np.cos(s["angle"])
            offset += s["hu"] * np.exp(-0.5 * (d / s["sigma"]) ** 2)
        plane = arr[k].astype(float) + offset.reshape(nj, ni)
        arr[k] = np.round(plane) if np.issubdtype(arr.dtype, np.integer) else plane
