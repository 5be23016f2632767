"""Where the user's own code is: the line an error came from, and where adamtune's warnings point."""

import dataclasses
import traceback
import warnings

import pytest
import torch
from torch import nn

import adamtune
from adamtune.trials import last_line
from adamtune.usercode import where, where_in
from adamtune.workloads import load_workload


def _shapes_wrong():
    return nn.Linear(3, 2)(torch.zeros(4, 5))  # torch raises, from this line of the user's


def test_an_error_is_named_by_the_innermost_line_of_the_users_code(user_line):
    with pytest.raises(RuntimeError) as e:
        _shapes_wrong()
    assert where(e.value) == user_line("torch raises, from this line")
    with pytest.raises(RuntimeError) as e:
        nn.Linear(3, 2)(torch.zeros(4, 5))
    # its frames from torch's on, as adamtune catches a built-in model's error: nothing of the user's to name
    assert where(e.value.with_traceback(e.value.__traceback__.tb_next)) == ""
    assert where(None) == ""


# A traceback as a Ray worker on another machine stores it: its Python, torch and adamtune live elsewhere.
ELSEWHERE = """Traceback (most recent call last):
  File "/home/u/proj/train.py", line 7, in make
    return load()
KeyError: 'x'

During handling of the above exception, another exception was raised:

Traceback (most recent call last):
  File "/home/u/proj/src/adamtune/engine/sequential.py", line 80, in train_trial
    out = model(x)
  File "/opt/conda/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1775, in _wrapped_call_impl
    return self._call_impl(*args, **kwargs)
  File "/home/u/proj/errs.py", line 29, in forward
    h = h + undefined_helper(h)
  File "/usr/lib/python3.11/functools.py", line 12, in wrapper
    return f()
NameError: name 'undefined_helper' is not defined
"""


def test_a_stored_traceback_names_the_users_line_of_its_last_error_wherever_it_was_stored():
    assert where_in(ELSEWHERE) == " (errs.py, line 29)"
    assert last_line(ELSEWHERE) == "NameError: name 'undefined_helper' is not defined (errs.py, line 29)"
    assert where_in(ELSEWHERE.replace("/home/u/proj/errs.py", "/opt/conda/lib/python3.11/site-packages/x.py")) == ""
    assert last_line("not run: the study stopped before this trial") == "not run: the study stopped before this trial"
    assert where_in(None) == where_in("") == ""


def test_a_traceback_written_here_names_the_users_line(user_line):
    try:
        _shapes_wrong()
    except RuntimeError:
        text = traceback.format_exc()
    assert last_line(text).endswith(user_line("torch raises, from this line"))


class _Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)
        self.fc1.requires_grad_(False)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class _ItemInForward(_Frozen):
    def __init__(self):
        super().__init__()
        self.fc1.requires_grad_(True)

    def forward(self, x):
        if self.fc1.weight.sum().item() > float("-inf"):  # vmap cannot batch it
            return super().forward(x)
        return super().forward(-x)


@pytest.mark.parametrize("model, said", [(_Frozen, "frozen parameters"), (_ItemInForward, "vmap cannot run")],
                         ids=["said-before-training", "said-after-a-batch-stopped"])
def test_a_notice_warns_at_the_users_call_of_adamtune_not_in_adamtune(storage, tiny_file, model, said, user_line):
    """The notices come from calls of different depths inside adamtune; each points at the call."""
    w = dataclasses.replace(load_workload(f"{tiny_file}:tiny"), model=model, steps=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = adamtune.tune(w, budget=2, storage=storage, pruner="none")
    [note] = [c for c in caught if issubclass(c.category, adamtune.AdamtuneWarning)]
    assert said in str(note.message)
    assert (note.filename, note.lineno) == (__file__, _line(user_line("result = adamtune.tune(w")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adamtune.confirm(result, w, top=3, seeds=2)
    notes = [c for c in caught if issubclass(c.category, adamtune.AdamtuneWarning)]
    assert notes and {(c.filename, c.lineno) for c in notes} == {(__file__, _line(user_line("adamtune.confirm(result")))}
    for c in [note, *notes]:  # tune's and confirm's fallback alike name the line vmap stopped at
        if "vmap" in str(c.message):
            assert str(c.message).endswith(user_line("# vmap cannot batch it"))
    assert any("vmap" in str(c.message) for c in notes) == ("vmap" in said)


def _line(at: str) -> int:
    """N of `` (file.py, line N)``."""
    return int(at.rstrip(")").rpartition(" ")[2])
