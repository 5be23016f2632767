import pytest

from adamtune.analysis._format import set_argument, window_text
from adamtune.space import Dimension, parse_override


@pytest.mark.parametrize("dim, text", [
    (Dimension("lr", 1e-5, 0.32, "log"), "lr=1e-05:0.32"),
    (Dimension("weight_decay", 0.0, 0.1, "linear"), "weight_decay=0:0.1:linear"),  # 0 has no log scale
    (Dimension("beta2", 0.95, 0.9999, "log1m"), "beta2=0.95:0.9999"),
    (Dimension("beta1", 0.5, 0.99, "linear"), "beta1=0.5:0.99:linear"),
    (Dimension("warmup", 0.0, 0.1, "linear"), "warmup=0:0.1"),
    (Dimension("warmup", 0.01, 0.1, "log"), "warmup=0.01:0.1:log"),
])
def test_set_argument_names_the_scale_only_where_it_is_not_the_default(dim, text):
    assert set_argument(dim) == text
    assert parse_override(text) == (dim.name, dim)  # what is printed is what --set accepts


def test_window_text_keeps_betas_below_one():
    assert window_text(Dimension("beta2", 0.95, 0.9999, "log1m")) == "0.95..0.9999"
