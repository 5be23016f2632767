import re
import xml.etree.ElementTree as ET

from adamtune.analysis import AxisPlotInfo, AxisPoint, CurveSeries, CurvesInfo, HeatmapCell, HeatmapInfo
from adamtune.report import plots
from adamtune.space import Dimension
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


def texts(svg):
    """Every text of a figure with its anchor ``(text, x, rotation, text-anchor)``."""
    out = []
    for m in re.finditer(r'<text style="([^"]*)" x="([-\d.]+)" y="[-\d.]+" transform="rotate\((-?[\d.]+)[^"]*">([^<]*)</text>', svg):
        anchor = re.search(r"text-anchor: (\w+)", m.group(1))
        out.append((m.group(4), float(m.group(2)), float(m.group(3)), anchor.group(1) if anchor else "start"))
    return out


def all_diverged_axis(lo=0.5, hi=5.0):
    dim = Dimension("lr", lo, hi, "log")
    points = tuple(AxisPoint(i, x, 1.08, TrialState.DIVERGED, True, False) for i, x in enumerate((0.57, 1.1, 2.3, 4.5)))
    return AxisPlotInfo(dim, "val_loss", "minimize", points, (0.0, 1.08), 1.08)


def test_a_window_under_a_decade_still_has_lr_values_to_read():
    labels = [t for t, *_ in texts(plots.axis_plot(all_diverged_axis()))]
    assert {"0.5", "1", "2", "5"} <= set(labels)  # decade ticks alone gave one label, "1"
    labels = [t for t, *_ in texts(plots.axis_plot(all_diverged_axis(1e-3, 3e-3)))]
    assert {"0.001", "0.002", "0.003"} <= set(labels)


def test_the_legend_lists_only_the_kinds_of_trial_present():
    labels = [t for t, *_ in texts(plots.axis_plot(all_diverged_axis()))]
    assert "best" not in labels and "complete" not in labels and "pruned" not in labels
    # the line's name is its y tick, left of the plot, where no cross can cover it; no values when none is finite
    assert labels.count("diverged") == 2  # tick and legend
    assert not [t for t in labels if re.fullmatch(r"[\d.]+", t) and float(t) < 0.5]


def test_steps_are_whole_and_the_y_label_clears_long_tick_labels():
    info = CurvesInfo("train_loss", False, "minimize", tuple(
        CurveSeries(i, TrialState.DIVERGED, (25,), (v,), None) for i, v in enumerate((150.0, 900.0, 2e4, 8e4))))
    found = texts(plots.curves_plot(info))
    assert {"24", "25", "26"} <= {t for t, *_ in found} and "24.5" not in {t for t, *_ in found}
    (label,) = [(x, t) for t, x, rot, _ in found if rot == -90]
    assert label[1] == "train_loss"
    ticks = [(x, t) for t, x, rot, anchor in found if anchor == "end"]
    assert "100000" in {t for _, t in ticks}
    size = 9
    assert label[0] - 0.8 * size >= 0  # inside the figure
    assert label[0] + 0.3 * size <= min(x - 0.55 * size * len(t) for x, t in ticks)  # not under the tick labels


def test_the_best_trial_is_a_star_with_a_light_edge_and_labels_move_off_the_marks():
    lr, wd = Dimension("lr", 1e-4, 1e-2, "log"), Dimension("weight_decay", 1e-5, 1e-1, "log")
    C = HeatmapCell
    info = HeatmapInfo(lr, wd, "val_loss", "minimize", (1e-4, 1e-3, 1e-2), (1e-5, 1e-3, 1e-1),
                       ((C(0.5, 0, 1, 0), C(0.1, 1, 1, 0)), (C(None, None, 1, 0), C(0.3, 3, 1, 0))),
                       ((0, 3e-4, 1e-4, TrialState.COMPLETE), (1, 3e-3, 1e-4, TrialState.COMPLETE),
                        (2, 3e-4, 1e-2, TrialState.PRUNED), (3, 3e-3, 1e-2, TrialState.COMPLETE)), 1)
    svg = plots.heatmap(info)
    (star,) = re.findall(r'<use [^>]*y="([-\d.]+)" style="fill: #f59e0b; stroke: #ffffff"', svg)  # shows on dark cells
    (label,) = re.finditer(r'text-anchor: middle[^"]*" x="[-\d.]+" y="([-\d.]+)"[^>]*>0\.1</text>', svg)  # not the colorbar's
    assert abs(float(label.group(1)) - float(star)) > 8  # the star sits mid-cell (trial 1): its value label moves off
    assert plots.label_height([]) == 0.5
    assert plots.label_height([(0.5, 0.5, False)]) != 0.5
    assert plots.label_height([(0.5, 0.5, False), (0.5, 0.8, True)]) == 0.22
    assert plots.label_height([(0.05, 0.5, False)]) == 0.5  # a dot at the cell's side leaves the middle free


def test_the_widen_label_prints_the_bound_as_the_set_suggestion_does():
    from adamtune.analysis import AxisPlotInfo, AxisPoint, BoundaryCheck, set_argument
    from adamtune.report.plots import axis_plot
    from adamtune.space import Dimension

    dim = Dimension("lr", 1e-5, 1e-2, "log")
    proposal = Dimension("lr", 1e-5, 0.316227766, "log")
    check = BoundaryCheck("lr", dim, 0.1, 0.97, ((0, 0.97),), edge="upper", proposal=proposal)
    assert set_argument(proposal) == "lr=1e-05:0.32"
    point = AxisPoint(0, 1e-2 * 0.9, 0.5, TrialState.COMPLETE, False, True)
    info = AxisPlotInfo(dim, "val_loss", "minimize", (point,), (0.4, 0.6), None)
    assert "widen to 0.32" in axis_plot(info, check)


def test_failed_trials_have_their_own_marker_legend_entry_and_name_on_the_edge_line():
    dim = Dimension("lr", 1e-3, 3.0, "log")
    points = (AxisPoint(0, 0.01, 0.3, TrialState.COMPLETE, False, True), AxisPoint(1, 0.05, 0.5, TrialState.COMPLETE, False, False),
              AxisPoint(2, 0.3, 0.58, TrialState.FAILED, True, False), AxisPoint(3, 1.2, 0.58, TrialState.FAILED, True, False))
    info = AxisPlotInfo(dim, "val_loss", "minimize", points, (0.3, 0.58), 0.58)
    assert [h.get_label() for h in plots.legend_handles(points)] == ["best", "complete", "failed"]
    assert plots.edge_label(points) == "failed"
    svg = plots.axis_plot(info)
    labels = [t for t, *_ in texts(svg)]
    assert labels.count("failed") == 2 and "diverged" not in labels  # tick and legend
    both = (*points, AxisPoint(4, 2.0, 0.58, TrialState.DIVERGED, True, False))
    assert plots.edge_label(both) == "diverged/failed"
    assert [h.get_label() for h in plots.legend_handles(both)][-2:] == ["diverged", "failed"]
