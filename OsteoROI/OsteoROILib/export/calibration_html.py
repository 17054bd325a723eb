"""The report's calibration section: method and material, the fit (slope, intercept, R²), the rods with
their residuals, and the plot of the rod points with the fitted line (QCT_BRIEF §4).
"""
from __future__ import annotations

from typing import Mapping

from .charts import calibration_svg, calibration_view
from .style import esc, number_text
from .wording import method_words

#: Calibration materials in words (QCT_BRIEF §4: the unit travels with every number).
MATERIALS = {"HA": "hydroxyapatite (HA)", "K2HPO4": "dipotassium phosphate (K2HPO4)"}


def _facts(pairs) -> str:
    return "<table>" + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in pairs) + "</table>"


def _residual_table(cal: Mapping[str, object]) -> str:
    """One row per rod: nominal density, measured mean HU and the fit's residual (HU)."""
    pts = [p for p in cal.get("points") or [] if isinstance(p, Mapping) and p.get("density") is not None]
    if not pts:
        return ""
    rows = "".join(f"<tr><td>{esc(p.get('name') or '')}</td><td class='num'>{number_text(p.get('density'), 1)}</td>"
                   f"<td class='num'>{number_text(p.get('mean_hu'), 1)}</td>"
                   f"<td class='num'>{number_text(p.get('residual_hu'), 2)}</td></tr>" for p in pts)
    return ("<table class='residuals'><tr><th>Rod</th><th class='num'>Density (mg/cm³)</th><th class='num'>Mean HU</th>"
            "<th class='num'>Residual (HU)</th></tr>" + rows + "</table>")


def calibration_section(dx: Mapping[str, object]) -> str:
    """The calibration's fit, numbers, rods and plot; or that the values are uncalibrated HU."""
    cal = dx.get("calibration")
    if not isinstance(cal, Mapping):
        return ("<section><h2>Calibration</h2><p class='note'>None: the values are uncalibrated HU. QCT vBMD "
                "needs a phantom or internal calibration.</p></section>")
    cv = calibration_view(cal)
    material = MATERIALS.get(str(cal.get("unit") or ""), cal.get("unit"))
    items = [("Method", method_words(cv["method"])), ("Phantom", cv["phantom"]), ("Material", material),
             ("Unit", cv["unit"]), ("Slope (HU per mg/cm³)", cv["slope"]), ("Intercept (HU)", cv["intercept"]),
             ("R²", cv["r2"]), ("Rods / references", len(cv["points"]) or None)]
    notes = "".join(f"<div class='warn'>{esc(w)}</div>" for w in cv["warnings"])
    return ("<section class='calibration'><h2>Calibration</h2><div class='charts'><div class='caltable'>"
            + _facts([(k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in items if v is not None])
            + f"<div class='note'>{esc(cv['equation'] or 'vBMD = (HU − intercept) / slope')}</div>"
            + _residual_table(cal) + notes + "</div>" + calibration_svg(cal) + "</div></section>")
