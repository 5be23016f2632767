import math

import pytest
import torch

from adamtune.engine.monitor import DivergenceMonitor, GradNormLog

NAN, INF = math.nan, math.inf


def reference(rows: list[list[float]], factor: float, intervals: list[int]):
    """What the monitor must say, computed step by step in plain Python floats."""
    k = len(rows[0])
    first = [NAN] * k
    bad = [-1] * k
    out, start = [], 0
    for end in intervals:
        total = [0.0] * k
        for step in range(start, end):
            for m in range(k):
                x = rows[step][m]
                if math.isnan(first[m]):
                    first[m] = x
                if not math.isfinite(x) and bad[m] < 0:
                    bad[m] = step + 1
                total[m] += x
        mean = [t / (end - start) for t in total]
        diverged = [bad[m] >= 0 or not math.isfinite(mean[m]) or mean[m] > factor * abs(first[m]) for m in range(k)]
        out.append((mean, diverged, list(bad)))
        start = end
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_divergence_monitor_matches_a_step_by_step_reading(dtype):
    # Member 0 trains normally; 1 turns inf at step 3 and NaN later; 2 starts with NaN (its
    # first loss is the next one) and is bad from the start; 3 grows past 3x its first loss
    # in the second interval; 4 is -inf once.
    rows = [
        [2.0, 2.0, NAN, 1.0, 1.0],
        [1.5, 2.5, 1.0, 1.2, 1.0],
        [1.2, INF, 1.0, 1.5, -INF],
        [1.0, NAN, 1.0, 2.0, 1.0],
        [0.9, 1.0, 1.0, 3.5, 1.0],
        [0.8, 1.0, 1.0, 4.0, 1.0],
    ]
    monitor = DivergenceMonitor(5, 3.0)
    intervals = [3, 6]
    expected = reference(rows, 3.0, intervals)
    start = 0
    for (mean_ref, diverged_ref, bad_ref), end in zip(expected, intervals):
        for step in range(start, end):
            monitor.update(step + 1, torch.tensor(rows[step], dtype=dtype))
        mean, diverged = monitor.end_interval()
        assert diverged.tolist() == diverged_ref
        assert monitor.first_bad_step.tolist() == bad_ref
        finite = [m for m in range(5) if math.isfinite(mean_ref[m])]
        rel = 1e-6 if dtype == torch.float32 else 1e-12
        assert mean[finite].tolist() == pytest.approx([mean_ref[m] for m in finite], rel=rel)
        start = end
    assert monitor.first_loss.tolist()[:2] == [2.0, 2.0] and monitor.first_loss.tolist()[2] == 1.0
    assert diverged.tolist() == [False, True, True, True, True]


def test_monitor_keeps_members_and_holds_no_graph():
    monitor = DivergenceMonitor(3, 3.0)
    w = torch.ones(3, requires_grad=True)
    monitor.update(1, w * 2.0)
    assert not monitor._losses[0].requires_grad  # an interval does not keep 25 autograd graphs
    monitor.update(2, torch.tensor([1.0, 100.0, 1.0]))
    mean, diverged = monitor.end_interval()
    assert mean.tolist() == [1.5, 51.0, 1.5] and diverged.tolist() == [False, True, False]
    monitor.keep(torch.tensor([0, 2]))
    monitor.update(3, torch.tensor([7.0, 1.0]))
    mean, diverged = monitor.end_interval()
    assert mean.tolist() == [7.0, 1.0] and diverged.tolist() == [True, False]
    assert monitor.first_loss.tolist() == [2.0, 2.0]


def test_grad_norm_log_follows_kept_members():
    log = GradNormLog()
    log.append(torch.tensor([1.0, 2.0, 3.0]))
    log.append(torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64))
    log.keep(torch.tensor([0, 2]))
    log.append(torch.tensor([7.0, 8.0]))
    log.keep(torch.tensor([1]))
    log.append(torch.tensor([9.0]))
    s = log.summary(0, max_grad_norm=5.0)
    assert s.count == 4 and s.max == 9.0 and s.samples == (3.0, 6.0, 8.0, 9.0)
    assert s.clipped_fraction == pytest.approx(0.75)
