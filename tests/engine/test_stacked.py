import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from adamtune.engine.batched import meta_copy
from adamtune.engine.stacked import _NarrowLinear, member_losses, stacked_forward
from adamtune.workloads import accuracy, cross_entropy

K = 4

def _twice(middle):
    return nn.Sequential(nn.Linear(6, 8), middle, nn.Linear(8, 8), nn.Tanh(), middle, nn.Linear(8, 3))


def _tied():
    first, second = nn.Linear(8, 8), nn.Linear(8, 8)
    second.weight = first.weight
    return nn.Sequential(nn.Linear(6, 8), first, nn.ReLU(), second, nn.Linear(8, 3))


# (name, model factory, one member's input shape): every layer the written-out path covers
MODELS = [
    ("mlp", lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), (5, 6)),
    ("no bias, 3-d input", lambda: nn.Sequential(nn.Linear(6, 8, bias=False), nn.GELU(), nn.Linear(8, 3)), (5, 7, 6)),
    ("nested, layer norm, flatten",
     lambda: nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 8), nn.LayerNorm(8), nn.SiLU()),
                           nn.Dropout(0.0), nn.Linear(8, 3), nn.LogSoftmax(dim=1)), (5, 3, 4)),
    ("layer norm first",
     lambda: nn.Sequential(nn.LayerNorm([3, 4]), nn.Flatten(1, -1), nn.Tanh(), nn.Linear(12, 3), nn.Softmax(-1)), (5, 3, 4)),
    ("layer norm without affine or bias",
     lambda: nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8, elementwise_affine=False), nn.LeakyReLU(0.1),
                           nn.Linear(8, 8), nn.LayerNorm(8, bias=False), nn.Linear(8, 2)), (5, 6)),
    ("one example, no batch dimension", lambda: nn.Sequential(nn.Linear(6, 3), nn.Hardtanh()), (6,)),
    # from 16 outputs a Linear runs as h @ W^T, below as (W @ h^T)^T: both ways, with and without bias
    ("in-place activations after narrow layers",
     lambda: nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(inplace=True), nn.Linear(8, 5), nn.ReLU(inplace=True),
                           nn.Linear(5, 3)), (5, 6)),
    # a module used twice is run twice (named_children lists it once); a weight used twice,
    # by one module or tied to another's, is one stacked tensor with both uses' gradients
    ("one activation used twice", lambda: _twice(nn.ReLU()), (5, 6)),
    ("one layer used twice", lambda: _twice(nn.Linear(8, 8)), (5, 6)),
    ("tied weights", _tied, (5, 6)),
    ("wide and narrow layers",
     lambda: nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 16, bias=False), nn.Tanh(),
                           nn.Linear(16, 15), nn.ReLU(), nn.Linear(15, 2, bias=False)), (5, 7, 6)),
]


def _stack(factory):
    torch.manual_seed(0)
    models = [factory().double() for _ in range(K)]
    for m in models:  # LayerNorm starts at weight 1, bias 0: make members differ there too
        for p in m.parameters():
            p.data.add_(torch.randn_like(p) * 0.1)
    params, buffers = stack_module_state(models)
    return meta_copy(models[0]), params, buffers


@pytest.mark.parametrize("name, factory, shape", MODELS, ids=[m[0] for m in MODELS])
def test_written_out_forward_and_gradients_equal_vmap(name, factory, shape):
    base, params, buffers = _stack(factory)
    forward = stacked_forward(base)
    assert forward is not None
    x = torch.randn(*shape, dtype=torch.float64)
    ref_fn = torch.vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)), in_dims=(0, 0, None))
    ref, out = ref_fn(params, buffers, x), forward(params, x)
    assert out.shape == ref.shape == (K, *ref.shape[1:])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(ref)  # a loss that gives every output element its own gradient
    g_ref = torch.autograd.grad((ref * weights).sum(), list(params.values()))
    g_out = torch.autograd.grad((out * weights).sum(), list(params.values()))
    for n, a, b in zip(params, g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=n)


def test_a_narrow_layer_hands_dense_gradients_down():
    # Autograd's own backward of (W @ h^T)^T hands the layer below a transposed gradient, on
    # which torch's elementwise backward ops (ReLU's) run several times slower.
    torch.manual_seed(0)
    h = torch.randn(K, 5, 6, requires_grad=True)
    w = torch.randn(K, 3, 6, requires_grad=True)
    b = torch.randn(K, 3, requires_grad=True)
    out = _NarrowLinear.apply(h, w, b)
    torch.testing.assert_close(out, h @ w.transpose(1, 2) + b.unsqueeze(1))
    (out * torch.randn_like(out)).sum().backward()
    assert h.grad.is_contiguous() and w.grad.is_contiguous()


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x)


class MySequential(nn.Sequential):  # a subclass may override forward
    pass


def _hooked():
    m = nn.Sequential(nn.Linear(6, 3))
    m[0].register_forward_hook(lambda mod, inp, out: out * 2)
    return m


@pytest.mark.parametrize("factory", [
    Custom,
    lambda: MySequential(nn.Linear(6, 3)),
    lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)),  # buffers
    lambda: nn.Sequential(nn.Linear(6, 8), nn.PReLU(), nn.Linear(8, 3)),  # an activation with a parameter
    lambda: nn.Sequential(nn.Conv1d(1, 2, 3)),
    lambda: nn.Sequential(nn.Linear(6, 3), nn.Softmax()),  # implicit dim: depends on the input's rank
    _hooked,
], ids=["custom module", "Sequential subclass", "batchnorm", "prelu", "conv", "softmax without dim", "forward hook"])
def test_anything_else_is_left_to_vmap(factory):
    assert stacked_forward(factory()) is None


@pytest.mark.parametrize("inplace", [False, True])
def test_dropout_on_the_input_draws_a_mask_per_member(inplace):
    # The input is shared by all members until the first layer with parameters; dropout on it
    # must still drop different inputs in different members, as each model alone would.
    base, params, _ = _stack(lambda: nn.Sequential(nn.Dropout(0.5, inplace=inplace), nn.Linear(6, 20)))
    forward = stacked_forward(base)
    x = torch.randn(200, 6, dtype=torch.float64)
    out = forward(params, x)
    w, b = params["1.weight"], params["1.bias"]
    kept = [(out[i] - b[i]) @ torch.linalg.pinv(w[i]).T for i in range(K)]  # each member's dropped input
    for i in range(K):
        dropped = kept[i].abs() < 1e-9
        assert 0.4 < dropped.double().mean() < 0.6
        torch.testing.assert_close(kept[i][~dropped], 2 * x[~dropped])
    assert ((kept[0].abs() < 1e-9) != (kept[1].abs() < 1e-9)).any()
    base.eval()
    torch.testing.assert_close(forward(params, x), x @ w.transpose(1, 2) + b.unsqueeze(1))


def test_dropout_draws_a_mask_per_member_and_stops_in_eval():
    base, params, _ = _stack(lambda: nn.Sequential(nn.Linear(6, 64), nn.Dropout(0.5)))
    forward = stacked_forward(base)
    x = torch.randn(200, 6, dtype=torch.float64)
    out = forward(params, x)
    dropped = out == 0
    assert 0.4 < dropped.double().mean() < 0.6
    assert (dropped[0] != dropped[1]).any()  # members do not share masks
    base.eval()
    plain = forward(params, x)
    assert not (plain == 0).any()
    kept = ~dropped
    torch.testing.assert_close(out[kept], 2 * plain[kept])  # the kept units are scaled by 1/(1-p)


# 10 classes take the classes-on-dimension-1 form (narrower than a SIMD vector), 20 the flat one.
@pytest.mark.parametrize("classes", [10, 20])
@pytest.mark.parametrize("target_shape", [(5,), (5, 7)])
def test_member_cross_entropy_equals_each_members_own(target_shape, classes):
    out = torch.randn(K, *target_shape, classes, dtype=torch.float64)
    y = torch.randint(0, classes, target_shape)
    y.view(-1)[:3] = -100  # ignored targets leave the mean as F.cross_entropy takes it
    got = member_losses(cross_entropy)(out, y)
    want = torch.stack([cross_entropy(out[k], y) for k in range(K)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    want_acc = torch.stack([accuracy(out[k], y) for k in range(K)])
    assert torch.equal(member_losses(accuracy)(out, y), want_acc)  # all members in one comparison
    mine = member_losses(lambda o, t: accuracy(o, t))  # any other function runs under vmap
    assert torch.equal(mine(out, y), want_acc)


@pytest.mark.parametrize("transposed", [False, True])
def test_member_accuracy_breaks_ties_and_nans_as_argmax_does(transposed):
    torch.manual_seed(0)
    out = torch.randint(0, 3, (K, 10, 50)).double()  # many ties
    out[torch.rand_like(out) < 0.05] = float("nan")
    out = out.transpose(1, 2) if transposed else out.transpose(1, 2).contiguous()  # [K, 50, 10]
    y = torch.randint(0, 10, (50,))
    want = torch.stack([accuracy(out[k].contiguous(), y) for k in range(K)])
    assert torch.equal(member_losses(accuracy)(out, y), want)


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize(("out_shape", "target_shape"), [((8, 10), (8, 1)), ((10,), ()), ((8, 5, 10), (5,)), ((8, 10), (4, 1))])
def test_member_accuracy_broadcasts_the_target_as_each_member_alone(k, out_shape, target_shape):
    # Targets shaped unlike the predictions broadcast as accuracy(out[k], y) broadcasts them,
    # whatever K is (K equal to a target dimension must not line up with it).
    out = torch.randn(k, *out_shape)
    y = torch.randint(0, 10, target_shape)
    want = torch.stack([accuracy(out[m], y) for m in range(k)])
    assert torch.equal(member_losses(accuracy)(out, y), want)


def test_accuracy_compares_a_column_of_targets_prediction_by_prediction():
    out = torch.eye(4)[[0, 1, 2, 3]]  # predicts 0, 1, 2, 3
    y = torch.tensor([[0], [1], [0], [3]])  # [B, 1]: 3 of 4 right, not 16 pairs compared
    assert accuracy(out, y).item() == 0.75
    assert member_losses(accuracy)(out.expand(2, 4, 4), y).tolist() == [0.75, 0.75]


@pytest.mark.parametrize("classes", [10, 20])
def test_member_losses_keep_the_gradient_of_each_member_to_itself(classes):
    out = torch.randn(K, 5, classes, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, classes, (5,))
    (g,) = torch.autograd.grad(member_losses(cross_entropy)(out, y)[1], out)
    assert g[[0, 2, 3]].abs().max() == 0
    (want,) = torch.autograd.grad(F.cross_entropy(out[1], y), out)
    torch.testing.assert_close(g, want)


def test_the_builtin_mlp_is_written_out_and_the_others_use_vmap():
    from adamtune.workloads import load_workload
    assert stacked_forward(load_workload("digits-mlp").model()) is not None
    assert stacked_forward(load_workload("digits-cnn").model()) is None


def test_few_classes_give_the_flat_forms_values_bit_for_bit(monkeypatch):
    import adamtune.engine.stacked as stacked
    out = torch.randn(K, 64, 10, requires_grad=True)
    y = torch.randint(0, 10, (64,))
    shapes = []
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda x, *a, **kw: shapes.append(tuple(x.shape)) or real(x, *a, **kw))
    narrow = member_losses(cross_entropy)(out, y)
    assert shapes == [(K, 10, 64)]  # classes on dimension 1
    (g_narrow,) = torch.autograd.grad(narrow.sum(), out)
    old, stacked._NARROW_CLASSES = stacked._NARROW_CLASSES, 0
    try:
        flat = member_losses(cross_entropy)(out, y)
        (g_flat,) = torch.autograd.grad(flat.sum(), out)
    finally:
        stacked._NARROW_CLASSES = old
    assert torch.equal(narrow, flat) and torch.equal(g_narrow, g_flat)


@pytest.mark.parametrize("model, x", [
    (nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2)), torch.zeros(200, 30)),  # the input
    (nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(30, 2)), torch.zeros(200, 20)),  # a stacked layer
])
def test_an_input_of_the_wrong_width_is_refused_in_torchs_words(model, x):
    with pytest.raises(RuntimeError) as alone:
        model(x)
    params, _ = stack_module_state([model, model])
    with pytest.raises(RuntimeError) as stacked:
        stacked_forward(meta_copy(model))(params, x)
    assert str(stacked.value) == str(alone.value)
    assert str(alone.value).startswith("mat1 and mat2 shapes cannot be multiplied (200x")
