"""Result documents, CSV, atomic writes and Slicer markups files."""
import csv
import io
import json
import os

import jsonschema
import numpy as np
import pytest

from OsteoROILib.io import markups_file as markups

from OsteoROILib.export import measurement as results

from OsteoROILib.io import outputs
from OsteoROILib.errors import InputError, OutputError


def _row(level="L1", shape="oval", **kw):
    row = {
        "level": level, "shape": shape, "mean_hu": 101.5, "sd_hu": 12.25, "median_hu": 100.0, "min_hu": 60.0,
        "max_hu": 140.0, "p05_hu": 80.0, "p95_hu": 120.0, "n_voxels": 250, "area_mm2": 250.0, "volume_mm3": 250.0,
        "nominal_area_mm2": 251.3, "center_ras": [1.0, 2.0, 3.0], "slice_index": 7, "slab_mm": 1.0,
        "placement": "test", "warnings": [],
        "roi": {"kind": "ellipse", "center_ras": [1.0, 2.0, 3.0], "axis_u_ras": [0, 1, 0], "axis_v_ras": [-1, 0, 0],
                "half_u_mm": 5.0, "half_v_mm": 8.0, "slab_mm": 1.0},
    }
    row.update(kw)
    return row


def _measurement(rows):
    return {"rows": rows, "shapes": ["oval"], "slab_mm": 1.0, "warnings": [],
            "levels": {"L1": {"point_ras": [1, 2, 3], "outline": {}, "placement": "test", "slice_index": 7,
                              "warnings": []}}}


VOLUME_INFO = {"file": "x.nrrd", "size": [10, 10, 10], "spacing_mm": [1.0, 1.0, 1.0]}


def test_document_validates_and_nan_becomes_null():
    rows = [_row(), _row(shape="round", sd_hu=float("nan"), warnings=["single voxel"])]
    doc = results.build_document(_measurement(rows), VOLUME_INFO, command="test")
    results.validate_document(doc)
    assert doc["rows"][1]["sd_hu"] is None
    text = results.to_json_text(doc)
    assert "NaN" not in text
    assert json.loads(text)["schema"] == "osteoroi-measurement/1"


def test_schema_rejects_a_row_without_mean():
    row = _row()
    del row["mean_hu"]
    doc = results.build_document(_measurement([row]), VOLUME_INFO)
    with pytest.raises(jsonschema.ValidationError):
        results.validate_document(doc)


def test_schema_rejects_unknown_shape():
    doc = results.build_document(_measurement([_row(shape="square")]), VOLUME_INFO)
    with pytest.raises(jsonschema.ValidationError):
        results.validate_document(doc)


def test_csv_has_the_row_columns_and_blank_for_missing():
    rows = [_row(), _row(shape="round", sd_hu=None, warnings=["a", "b"])]
    text = results.to_csv_text(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0].keys()) == list(results.ROW_COLUMNS)
    assert float(parsed[0]["mean_hu"]) == 101.5
    assert parsed[1]["sd_hu"] == ""
    assert parsed[1]["warnings"] == "a | b"
    assert [float(x) for x in parsed[0]["center_ras"].split()] == [1.0, 2.0, 3.0]
    assert "nan" not in text.lower()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    good = tmp_path / "a.json"
    missing_folder = tmp_path / "nope" / "b.csv"
    with pytest.raises(OutputError):
        outputs.write_atomically({str(good): "{}", str(missing_folder): "x"})
    assert not good.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_check_output_paths(tmp_path):
    existing = tmp_path / "t.json"
    existing.write_text("old")
    with pytest.raises(OutputError, match="already exists"):
        outputs.check_output_paths([str(existing)])
    assert outputs.check_output_paths([str(existing)], overwrite=True) == [str(existing)]
    with pytest.raises(OutputError, match="does not exist"):
        outputs.check_output_paths([str(tmp_path / "no" / "x.csv")])
    with pytest.raises(OutputError, match="is a directory"):
        outputs.check_output_paths([str(tmp_path)])
    assert existing.read_text() == "old"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_check_output_paths_unwritable(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            outputs.check_output_paths([str(folder / "x.json")])
    finally:
        folder.chmod(0o700)


def test_markups_round_trip_and_lps(tmp_path):
    pts = {"L1": [10.5, -20.25, 300.0], "L2": [-3.0, 4.0, 270.0]}
    path = tmp_path / "p.mrk.json"
    path.write_text(json.dumps(markups.point_list_document(pts)))
    doc = json.loads(path.read_text())
    # Slicer stores LPS: R and A negated (independent statement of the convention).
    assert doc["markups"][0]["coordinateSystem"] == "LPS"
    assert doc["markups"][0]["controlPoints"][0]["position"] == [-10.5, 20.25, 300.0]
    back = markups.points_by_label(markups.read_point_list(str(path)))
    assert back == pts


def test_markups_ras_file_and_undefined_points(tmp_path):
    doc = {"markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": [
        {"label": "L3", "position": [1, 2, 3], "positionStatus": "defined"},
        {"label": "L4", "position": [0, 0, 0], "positionStatus": "undefined"}]}]}
    path = tmp_path / "r.mrk.json"
    path.write_text(json.dumps(doc))
    got = markups.points_by_label(markups.read_point_list(str(path)))
    assert got == {"L3": [1.0, 2.0, 3.0]}


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"nodes": []}), "no 'markups' list"),
        (json.dumps({"markups": [{"controlPoints": [{"label": "L1", "position": [1, 2]}]}]}), "no valid 3-D position"),
        (json.dumps({"markups": [{"controlPoints": []}]}), "no defined control points"),
        (json.dumps({"markups": [{"coordinateSystem": "XYZ", "controlPoints": []}]}), "coordinateSystem"),
    ],
)
def test_markups_malformed(tmp_path, content, words):
    path = tmp_path / "bad.mrk.json"
    path.write_text(content)
    with pytest.raises(InputError, match=words):
        markups.read_point_list(str(path))


def test_markups_duplicate_labels():
    with pytest.raises(InputError, match="more than once"):
        markups.points_by_label([{"label": "L1", "ras": [0, 0, 0]}, {"label": "l1", "ras": [1, 1, 1]}])


def test_clean_converts_numpy():
    cleaned = results._clean({"a": np.float32(1.5), "b": [np.int64(3), np.nan]})
    assert cleaned == {"a": 1.5, "b": [3, None]}
    assert type(cleaned["b"][0]) is int
