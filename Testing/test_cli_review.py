"""Command-line review: an output must never destroy an input, and a segmentation of another scan
is named as such (not as a wrong label map).

Every refusal exits 1, says what is wrong and what to do, and leaves the input byte-for-byte intact.
"""
import hashlib
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from OsteoROILib import cli


from OsteoROILib.io import outputs
from OsteoROILib.errors import OutputError
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.placement.labels import BUILTIN_LABEL_MAPS
from OsteoROILib.io.image_files import write_volume


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review")
    volume, truth = make_phantom()
    ct = str(folder / "ct.nrrd")
    write_volume(volume, ct)
    l1 = truth.level("L1")
    point = ",".join(f"{v:g}" for v in l1.center_ras)
    result = str(folder / "result.json")
    assert cli.main(["measure", ct, "--point", f"L1={point}", "--json", result]) == 0
    return {"folder": folder, "ct": ct, "point": f"L1={point}", "result": result, "volume": volume, "truth": truth}


def test_measure_output_that_is_the_ct_is_refused_even_with_overwrite(files, capsys):
    before = digest(files["ct"])
    code, _, err = run(["measure", files["ct"], "--point", files["point"], "--csv", files["ct"], "--overwrite"], capsys)
    assert code == 1
    assert "also an input" in err and "another file name" in err
    assert digest(files["ct"]) == before


def test_report_output_that_is_the_result_is_refused(files, capsys):
    before = digest(files["result"])
    code, _, err = run(["report", files["result"], "--json", files["result"], "--overwrite"], capsys)
    assert code == 1 and "also an input" in err
    assert digest(files["result"]) == before
    # the result is still a measurement document, usable again
    assert json.loads(open(files["result"]).read())["schema"] == "osteoroi-measurement/1"


def test_calibrate_output_that_is_the_ct_is_refused(files, capsys):
    before = digest(files["ct"])
    code, _, err = run(["calibrate", files["ct"], "--phantom", "qrm-bdc-6", "--auto-rods", "--out", files["ct"],
                        "--overwrite"], capsys)
    assert code == 1 and "also an input" in err
    assert digest(files["ct"]) == before


def test_check_output_paths_sees_the_same_file_under_another_name(tmp_path):
    src = tmp_path / "in.json"
    src.write_text("{}")
    link = tmp_path / "link.json"
    os.symlink(src, link)
    with pytest.raises(OutputError):
        outputs.check_output_paths([str(link)], overwrite=True, inputs=[str(src)])
    # an unrelated existing output with --overwrite stays allowed
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert outputs.check_output_paths([str(other)], overwrite=True, inputs=[str(src)]) == [str(other)]


def test_segmentation_of_another_scan_is_named_as_such(files, capsys):
    # A TotalSegmentator-style L1 label on a grid 2 m away from the CT: right labels, wrong scan.
    lab = np.zeros((20, 30, 30), np.int16)
    lab[5:15, 10:20, 10:20] = BUILTIN_LABEL_MAPS["total"]["L1"]
    img = sitk.GetImageFromArray(lab)
    img.SetSpacing((1.0, 1.0, 2.5))
    img.SetOrigin((2000.0, 2000.0, 2000.0))
    seg = str(files["folder"] / "other-scan-seg.nii.gz")
    sitk.WriteImage(img, seg)
    out = str(files["folder"] / "never.json")
    code, _, err = run(["measure", files["ct"], "--labels", seg, "--json", out], capsys)
    assert code == 1
    assert "does not overlap the CT" in err and "this CT" in err
    assert "--label-map" not in err  # the label map is right; suggesting to change it would mislead
    assert not os.path.exists(out)
