"""The Best line's step note and the curve findings under it, on curves of real runs: one verdict per curve.

The curves are the best trials of the advice audit's studies (``adamtune tune --workload digits-mlp`` and
the digits-cnn loop, seed 0), as stored: every evaluation's validation and training loss, to 6 digits.
Retrained with 8-16 fresh seeds (the pasted line in a plain PyTorch loop), none of their best steps was a
better length to train, and the demo's rise after its best was no overfitting.
"""

import pytest

import adamtune

# digits-mlp, trial 8 (the demo's best): 0.0802 at step 275 of 400, 0.1168 at the end. 16 seeds: 0.102
# at step 275, 0.090 at step 400.
DEMO_8 = (
    (0.380832, 0.254133, 0.212851, 0.164607, 0.128155, 0.151025, 0.125366, 0.184628, 0.111139, 0.0863994,
     0.0802049, 0.0939483, 0.116317, 0.0988489, 0.0834472, 0.116787),
    (1.11345, 0.355879, 0.199278, 0.157301, 0.100994, 0.076659, 0.0497639, 0.0415711, 0.0458392, 0.034154,
     0.0156064, 0.0199559, 0.00947792, 0.00689315, 0.00587002, 0.0057488),
)
# digits-mlp-next, trial 0: 0.07857 at step 175 of 400, 0.09862 at the end. 16 seeds: 0.194 at step 175,
# 0.121 at step 400.
NEXT_0 = (
    (0.484339, 0.248059, 0.221872, 0.166182, 0.174385, 0.0932796, 0.0785668, 0.116547, 0.0861729, 0.0821451,
     0.106478, 0.0913652, 0.102479, 0.129964, 0.127656, 0.0986187),
    (1.38753, 0.345821, 0.230707, 0.176616, 0.121647, 0.104682, 0.0769545, 0.0726153, 0.060835, 0.0633875,
     0.0603435, 0.060054, 0.0540603, 0.0541206, 0.0557607, 0.0516226),
)
# digits-cnn-next-next, trial 4: 0.04378 at step 125 of 300, a spike to 0.087, back to 0.049 by step 225.
# 10 seeds: 0.058 at step 125, 0.042 at step 300.
CNN_4 = (
    (0.241779, 0.268859, 0.0776502, 0.0549612, 0.0437753, 0.0873476, 0.0844431, 0.0684821, 0.0491901,
     0.0486346, 0.0508389, 0.0492354),
    (1.07101, 0.152231, 0.0686667, 0.0399716, 0.0153215, 0.00967746, 0.00776539, 0.00525774, 0.00378866,
     0.00116278, 0.00065947, 0.000566677),
)
# Overfitting: the validation loss turns up after step 150 and climbs far beyond its jitter of about
# 0.004 while the training loss keeps falling.
OVERFITS = (
    (0.9, 0.5, 0.3, 0.2, 0.16, 0.15, 0.158, 0.172, 0.168, 0.185, 0.2, 0.196, 0.215, 0.235, 0.231, 0.25),
    (1.2, 0.6, 0.35, 0.22, 0.15, 0.1, 0.07, 0.05, 0.036, 0.026, 0.019, 0.014, 0.01, 0.008, 0.006, 0.005),
)


def study_of(tmp_path, curve, every=25):
    """A stored study of one trial that reports ``curve`` (validation loss, training loss) every ``every`` steps."""
    val, train = curve

    def objective(config, trial):
        for i, (v, t) in enumerate(zip(val, train)):
            trial.report(every * (i + 1), v, train_loss=t)
        return min(val)

    return adamtune.tune(objective, budget=1, pruner="none", storage=f"sqlite:///{tmp_path / 's.db'}",
                         study="curve", notice=lambda m: None)


def findings_text(result):
    from adamtune.analysis import analyze
    from adamtune.report.findings import findings_lines

    return "\n".join(line.plain for line in findings_lines(analyze(result)))


LATE_DIP = ("the curve swings up and down late in training, so step {0} is a dip of that noise, not a better "
            "length to train (another seed dips elsewhere); a decaying lr schedule steadies it")


# digits-cnn, trial 0: its best (step 250) after the late part began; the swing counted is the late
# part's, from step 150, so "after step 250" (where it only rose) was not so.
CNN_0 = ((0.9, 0.4, 0.25, 0.17, 0.12, 0.0915, 0.1005, 0.0651, 0.0683, 0.0579, 0.0625, 0.0621),
         (2.0, 0.8, 0.4, 0.25, 0.15, 0.1, 0.07, 0.05, 0.04, 0.03, 0.025, 0.02))


@pytest.mark.parametrize("curve, note, left_out, kept", [
    (CNN_0, "at step 250 of 300; it ended at 0.0621: " + LATE_DIP.format(250), ("keep the checkpoint",), ()),
    # the demo: its rise within its late swings is a dip, not overfitting
    (DEMO_8, "at step 275 of 400; it ended at 0.1168: " + LATE_DIP.format(275), ("overfitting",),
     ("! high step-to-step variance late in training",)),
    # an early best within the swings after it: no saturation, no shorter run
    (NEXT_0, "at step 175 of 400; it ended at 0.09862: " + LATE_DIP.format(175), ("saturated", "train shorter"),
     ("! high step-to-step variance late in training",)),
    # a spike after the best that comes back down: the second half, mostly the way back down, swings
    # little, so the swing is judged from the best on
    (CNN_4, "at step 125 of 300; it ended at 0.04924: the curve swings up and down after step 125, so step 125 "
            "is a dip of that noise, not a better length to train (another seed dips elsewhere); a decaying lr "
            "schedule steadies it", ("saturated", "train shorter", "keep the checkpoint"), ()),
])
def test_a_best_that_is_a_dip_gets_one_verdict_in_the_note_and_the_findings(tmp_path, curve, note, left_out, kept):
    from adamtune.report.terminal import best_step_note

    result = study_of(tmp_path, curve)
    assert best_step_note(result) == "its best evaluation, " + note
    text = findings_text(result)
    assert not [t for t in left_out if t in text], text
    assert all(t in text for t in kept), text


def test_late_variance_says_why_a_dip_is_no_overfitting(tmp_path):
    from adamtune.analysis import analyze

    (late,) = analyze(study_of(tmp_path, DEMO_8)).of_kind("late_variance")
    assert late.detail.endswith(
        " Trial 0 ends 12% of its improvement above its best evaluation (step 275), less than its curve swings: "
        "that shows neither overfitting nor a better, shorter run.")


def test_a_validation_loss_climbing_beyond_its_jitter_is_overfitting_with_a_length_to_keep(tmp_path):
    from adamtune.report.terminal import best_step_note

    result = study_of(tmp_path, OVERFITS)
    assert best_step_note(result) == (
        "its best evaluation, at step 150 of 400; it ended at 0.25: keep the checkpoint of step 150, or train 150 "
        "steps")
    text = findings_text(result)
    assert "! overfitting: value turns worse while the training loss falls" in text


@pytest.mark.parametrize("curve", [DEMO_8, NEXT_0, CNN_4])
def test_the_report_card_says_what_the_terminal_says(tmp_path, curve):
    from adamtune.analysis import analyze
    from adamtune.report.html import render_html
    from adamtune.report.terminal import best_step_note

    result = study_of(tmp_path, curve)
    note = best_step_note(result)
    card = render_html(analyze(result)).split('id="best"')[1].split("</section>")[0]
    assert "dip of that noise" in note and note[1:] in card
