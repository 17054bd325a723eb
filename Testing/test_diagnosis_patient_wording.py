"""Every applicability note that asks for a patient fact names where to give it in both surfaces: the
Slicer panel's field (its label, read from the module's .ui file) and the command line's option (read
from the CLI's own parser), with a value the field and the option accept."""
import argparse
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from OsteoROILib.cli.commands import build_parser
from OsteoROILib.diagnosis.applicability import applicability
from OsteoROILib.diagnosis.patient import resolve_patient

UI = Path(__file__).resolve().parents[1] / "Resources" / "UI" / "OsteoROI.ui"


def _ui_fields():
    """{label text without colon: combo box items or None} for the panel's patient fields."""
    root = ET.parse(UI).getroot()
    labels = {w.get("name"): w.findtext("./property[@name='text']/string") for w in root.iter("widget")
              if w.get("class") == "QLabel"}
    out = {}
    for stem, widget in (("patientAge", "patientAgeLineEdit"), ("patientSex", "patientSexComboBox"),
                         ("menopause", "menopauseComboBox")):
        w = next(x for x in root.iter("widget") if x.get("name") == widget)
        items = [i.findtext("./property[@name='text']/string") or "" for i in w.findall("item")]
        out[labels[stem + "Label"].rstrip(":")] = items or None
    return out


def _cli_options():
    """{option: choices or None} over every sub-command of the CLI."""
    parser = build_parser()
    opts = {}
    for action in parser._actions:  # argparse has no public walk of its sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    for o in a.option_strings:
                        opts[o] = a.choices
    return opts


CASES = [  # (age, sex, menopause): each asks the reader for a fact
    (None, "M", None), (None, "M", "post"), (60, "F", None), (None, "F", None), (45, "F", None), (None, None, None),
]


@pytest.mark.parametrize("age,sex,meno", CASES)
def test_a_note_asking_for_a_fact_names_the_panel_field_and_the_option(age, sex, meno):
    ok, why = applicability(age, sex, meno)
    fields, options = _ui_fields(), _cli_options()
    asked = re.findall(r"(\w+)(?:: (\w+))? \((--[\w-]+)(?: (\w+))?\)", why)
    assert asked, why
    for label, value, option, opt_value in asked:
        assert label in fields, (label, why)
        assert option in options, (option, why)
        assert value == opt_value
        if value:
            assert value in fields[label], (value, fields[label])
            assert options[option] is None or value in options[option]
    assert re.search(r"(?<!\()--", why) is None, why  # no bare option without the panel's field


def test_the_age_errors_name_the_panel_field_too():
    with pytest.raises(Exception) as e:
        resolve_patient({}, {"age": "abc"})
    assert "Age field" in str(e.value) and "--age" in str(e.value)
    out = resolve_patient({"volume": {"dicom": {"patient_age": "250Y"}}}, {})
    assert any("Age (--age)" in n for n in out["notes"]), out["notes"]
