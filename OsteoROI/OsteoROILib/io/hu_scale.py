"""The HU scale checked on anatomy: air, fat and soft tissue must lie where a CT in HU puts them.

One voxel below −500 HU proves nothing (padding of −2000 does it). A body CT's histogram has peaks
at the tissues QCT_BRIEF §4 lists as internal references: air −1000 (−30/+20), adipose −100 ± 30,
muscle 30 ± 35 and blood 20 ± 40. The peaks of the image are matched against these anchors as
stored and under the probable mistakes (intercept missing or applied twice, slope wrong, negative
values stored unsigned); the image is refused when a mistake puts all three anchors where the values
as read do not, when no anchor (or no air where a low peak is) is found, or only air (a body has
tissue). A scan without air (a tight crop) is checked on the tissues it holds, and a caveat says
what could not be checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

#: Anchor windows (HU), QCT_BRIEF §4 typical tissue ranges, each widened by 20 HU for noise and
#: partial volume: air −1000 (−30/+20), adipose −100 ± 30, muscle 30 ± 35 / blood 20 ± 40.
ANCHORS_HU: Dict[str, Tuple[float, float]] = {
    "air": (-1050.0, -960.0),
    "fat": (-150.0, -50.0),
    "soft tissue": (-40.0, 85.0),
}
#: Stored value of air when the DICOM rescale intercept (−1024 on most scanners) is not applied.
TYPICAL_INTERCEPT = 1024.0
#: A peak must hold this fraction of the sampled voxels in its 10-unit bin (after smoothing).
PEAK_MIN_FRACTION = 0.004
HIST_BIN = 10.0
#: A peak stands this many times above the lower valley on both sides within 15 bins (150 units).
PEAK_PROMINENCE = 1.5
PEAK_VALLEY_BINS = 15
#: Fewer sampled voxels than this hold no reliable histogram: the anatomy cannot be checked.
MIN_SAMPLE_VOXELS = 4096
#: Voxels sampled (a regular sub-grid): enough for tissue peaks of a few % of the body, cheap beside a read.
SAMPLE_VOXELS = 500_000
#: A constant value at the image's minimum, this far below the next value present and at most this
#: value, is the scanner's padding outside the reconstruction circle, not air.
PADDING_GAP = 100.0
PADDING_MAX_VALUE = -1500.0
#: A peak below this (as read) that is not air means air is somewhere else: the scale is off.
LOW_PEAK_HU = -500.0


@dataclass
class HuScaleCheck:
    """What the anatomy check found: peak positions per anchor (as read), and what it could not check."""

    found: Dict[str, float]
    missing: List[str]

    def summary(self) -> str:
        if not self.found:
            return "HU scale not checked on anatomy (too few voxels)."
        seen = ", ".join(f"{k} {v:.0f}" for k, v in self.found.items())
        return f"HU scale checked on anatomy: {seen} HU (QCT_BRIEF §4 ranges)."

    def caveat_text(self) -> Optional[str]:
        if not self.missing:
            return None
        if not self.found:
            return "The image is too small to check its HU scale on anatomy (air, fat, soft tissue)."
        why = " (no air outside the body: a cropped scan?)" if "air" in self.missing else ""
        return (f"The HU scale could not be checked on {', '.join(self.missing)}{why}; it was checked on "
                f"{', '.join(self.found)} only.")


# The probable mistakes: (name, transform of stored values to HU, cause told to the user).
_MISTAKES: Sequence[Tuple[str, Callable[[np.ndarray], np.ndarray], str]] = (
    ("missing intercept", lambda p: p - TYPICAL_INTERCEPT,
     "the rescale intercept was not applied (stored values read as HU: RescaleIntercept missing or ignored)"),
    ("doubled intercept", lambda p: p + TYPICAL_INTERCEPT,
     "the rescale intercept was applied twice (HU shifted down by about 1024)"),
    ("slope x2", lambda p: p / 2.0, "the values are twice HU (a wrong RescaleSlope, e.g. 2 instead of 1)"),
    ("slope x0.5", lambda p: p * 2.0, "the values are half of HU (a wrong RescaleSlope, e.g. 0.5 instead of 1)"),
)


def sample_voxels(array: np.ndarray, n: int = SAMPLE_VOXELS) -> np.ndarray:
    """A regular sub-grid of about ``n`` voxels, as float."""
    step = max(1, int(np.ceil((array.size / float(n)) ** (1.0 / 3.0))))
    return np.asarray(array[::step, ::step, ::step], dtype=float).ravel()


def drop_padding(values: np.ndarray) -> np.ndarray:
    """The values without the scanner's constant padding (see ``PADDING_GAP``)."""
    low = float(values.min())
    at_low = values == low
    if low > PADDING_MAX_VALUE or np.count_nonzero(at_low) < 0.01 * values.size or at_low.all():
        return values
    rest = values[~at_low]
    return rest if float(rest.min()) - low >= PADDING_GAP else values


def histogram_peaks(values: np.ndarray) -> np.ndarray:
    """Positions of the prominent peaks of the values' histogram (10-unit bins, smoothed)."""
    lo, hi = np.percentile(values[::4], [0.05, 99.95])  # the histogram's range: a quarter of the sample does
    if not hi > lo:
        return np.array([lo])
    edges = np.arange(lo, hi + HIST_BIN, HIST_BIN)
    if edges.size > 20000:  # a range no CT has: keep the histogram small, the check still fails
        edges = np.linspace(lo, hi, 20001)
    counts, edges = np.histogram(values, bins=edges)
    smooth = counts.astype(float)
    if counts.size >= 5:
        smooth = np.convolve(counts, np.array([1, 2, 3, 2, 1]) / 9.0, mode="same")
    padded = np.pad(smooth, 3, constant_values=-1.0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 7)
    is_peak = (smooth >= windows.max(axis=1)) & (smooth >= PEAK_MIN_FRACTION * values.size)
    is_peak &= _prominent(smooth)
    centres = 0.5 * (edges[:-1] + edges[1:])
    return centres[is_peak]


def _prominent(smooth: np.ndarray) -> np.ndarray:
    """Bins that stand ``PEAK_PROMINENCE`` times above the valley on each side within
    ``PEAK_VALLEY_BINS`` (a tissue peak, not the ripple of a flat histogram)."""
    n = PEAK_VALLEY_BINS
    padded = np.pad(smooth, n, constant_values=0.0)  # nothing lies beyond the histogram
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * n + 1)
    left = windows[:, :n].min(axis=1)
    right = windows[:, n + 1:].min(axis=1)
    return smooth >= PEAK_PROMINENCE * np.maximum(left, right)


def _match(peaks: np.ndarray) -> Dict[str, float]:
    """Anchor name → the peak (in HU as given) that lies in its window."""
    found = {}
    for name, (lo, hi) in ANCHORS_HU.items():
        inside = peaks[(peaks >= lo) & (peaks <= hi)]
        if inside.size:
            centre = 0.5 * (lo + hi)
            found[name] = float(inside[np.argmin(np.abs(inside - centre))])
    return found


def _unsigned_peaks(values: np.ndarray) -> Optional[np.ndarray]:
    """Peaks after reading values ≥ 32768 as negative 16-bit numbers (signed data stored unsigned)."""
    high = values >= 32768
    if not high.any() or values.max() > 65535:
        return None
    return histogram_peaks(np.where(high, values - 65536.0, values))


def _describe(peaks: np.ndarray) -> str:
    shown = ", ".join(f"{p:.0f}" for p in sorted(peaks)[:6])
    return f"its histogram peaks lie at {shown}" if shown else "its histogram has no clear peak"


def check_hu_scale(array: np.ndarray, what: str = "The image") -> HuScaleCheck:
    """Refuse an image whose anatomy says it is not in HU; otherwise say what was checked."""
    values = drop_padding(sample_voxels(array))
    if values.size < MIN_SAMPLE_VOXELS:
        return HuScaleCheck(found={}, missing=list(ANCHORS_HU))
    peaks = histogram_peaks(values)
    as_read = _match(peaks)
    best: Optional[Tuple[int, str]] = None
    for _, transform, cause in _MISTAKES:
        score = len(_match(transform(peaks)))
        if score == len(ANCHORS_HU) and score > len(as_read) and best is None:
            best = (score, cause)
    unsigned = _unsigned_peaks(values)
    if unsigned is not None and len(_match(unsigned)) == len(ANCHORS_HU) > len(as_read):
        best = (len(_match(unsigned)), "negative HU were stored as unsigned 16-bit numbers (−1000 became 64536)")
    if best is not None:
        raise InputError(
            f"{what} does not look like a CT in Hounsfield units: {_describe(peaks)}, where a CT has air near −1000, fat near "
            f"−100 and soft tissue near 40 HU (QCT_BRIEF §4). Probable cause: {best[1]}.",
            "Re-export the CT with RescaleSlope/RescaleIntercept applied once (HU = stored × slope + intercept), "
            "as signed values, and load it again.")
    low = peaks[peaks < LOW_PEAK_HU]
    if not as_read or ("air" not in as_read and low.size) or set(as_read) == {"air"}:
        raise InputError(
            f"{what} does not look like a CT in Hounsfield units: {_describe(peaks)}; none matches "
            + ("air (−1000 HU)" if as_read and "air" not in as_read else
               "fat (−100) or soft tissue (40 HU)" if as_read else "air (−1000), fat (−100) or soft tissue (40 HU)")
            + " (QCT_BRIEF §4). It may not be a CT, or its rescale slope/intercept are wrong.",
            "Load the CT volume in HU (not MR, not a mask or a derived map), with rescale slope/intercept "
            "applied once.")
    return HuScaleCheck(found=as_read, missing=[k for k in ANCHORS_HU if k not in as_read])
