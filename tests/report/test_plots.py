import re
import xml.etree.ElementTree as ET

from adamtune.analysis import CurveSeries, CurvesInfo
from adamtune.report import plots
from adamtune.trials import TrialState

SVG = "{http://www.w3.org/2000/svg}"


def svgs(page):
    return re.findall(r'<svg class="figure".*?</svg>', page, flags=re.S)


def test_figures_are_well_formed_inline_svg_with_text_as_text(hostile_page):
    found = svgs(hostile_page)
    assert len(found) == 12
    for svg in found:
        root = ET.fromstring(svg)  # well-formed XML: no prolog, no doctype, nothing dangling
        assert root.tag == f"{SVG}svg"
        assert root.find(f".//{SVG}metadata") is None
        assert root.findall(f".//{SVG}text")  # svg.fonttype none: labels stay searchable text
        for el in root.iter():
            for key, value in el.attrib.items():
                if key.endswith("href"):  # only references inside the page (the colorbar is an inline PNG)
                    assert value.startswith(("#", "data:image/png;base64,")), value[:80]


def test_every_reference_points_at_an_id_of_the_same_figure(hostile_page):
    for svg in svgs(hostile_page):
        ids = set(re.findall(r' id="([^"]+)"', svg))
        refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', svg))
        assert refs <= ids


def test_a_dollar_in_a_metric_name_is_text_not_mathtext():
    info = CurvesInfo("val_$cost", True, "minimize", (
        CurveSeries(0, TrialState.COMPLETE, (10, 20), (1.0, 0.5), 0),
        CurveSeries(1, TrialState.DIVERGED, (10, 20), (2.0, float("nan")), None),
        CurveSeries(2, TrialState.PRUNED, (10,), (1.5,), None),
    ))
    svg = plots.curves_plot(info)
    assert "val_$cost" in svg and ET.fromstring(svg) is not None


def test_ticks_are_plain_text():
    assert [plots._tick_text(x) for x in (1e-5, 0.001, 1e-10, 3e12, 0.5)] == ["1e-5", "0.001", "1e-10", "3e12", "0.5"]
