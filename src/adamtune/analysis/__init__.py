"""Pure computations over a study's finished trials, each returning a small frozen record.

Every function takes a ``TuneResult`` -- or a sequence of ``TrialRecord`` plus the study's
``StudySettings`` -- and draws nothing: ``adamtune.report`` renders what these return.
``analyze`` runs them all.
"""

from adamtune.analysis._analyze import StudyAnalysis, analyze
from adamtune.analysis._boundary import BoundaryCheck, boundary_check, boundary_findings, widen
from adamtune.analysis._clipping import ClipAdvice, clip_advice, clip_findings
from adamtune.analysis._curves import (
    ENDED_AS_GOOD, CurveDiagnosis, Progress, Stability, curve_findings, diagnose_best, diagnose_curve, progress, progress_findings,
    stability, stability_findings,
)
from adamtune.analysis._decay import DecayTimescale, decay_findings, decay_timescale
from adamtune.analysis._failures import Failures, failure_findings, failures
from adamtune.analysis._finding import Finding
from adamtune.analysis._format import set_argument, window_text
from adamtune.analysis._importance import Importance, importance
from adamtune.analysis._next import ChangeStudy, NextDimension, NextSpace, change_study, next_space
from adamtune.analysis._plots import (
    AxisPlotInfo, AxisPoint, CurveSeries, CurvesInfo, HeatmapCell, HeatmapInfo, IsolationBucket, IsolationInfo,
    axis_plot_info, curves_info, heatmap_info, isolation_info, log_axis,
)
from adamtune.analysis._select import top_trials

__all__ = [
    "AxisPlotInfo", "AxisPoint", "BoundaryCheck", "ChangeStudy", "ClipAdvice", "CurveDiagnosis", "CurveSeries", "CurvesInfo",
    "DecayTimescale", "ENDED_AS_GOOD", "Failures", "Finding", "HeatmapCell", "HeatmapInfo", "Importance", "IsolationBucket", "IsolationInfo", "NextDimension",
    "NextSpace", "Progress", "Stability", "StudyAnalysis", "analyze", "axis_plot_info", "boundary_check", "boundary_findings",
    "change_study", "clip_advice", "clip_findings", "curve_findings", "curves_info", "decay_findings", "decay_timescale", "diagnose_best", "diagnose_curve",
    "failure_findings", "failures",
    "heatmap_info", "importance", "isolation_info", "log_axis", "next_space", "progress", "progress_findings", "set_argument", "stability",
    "stability_findings", "top_trials", "widen", "window_text",
]
