import copy
import dataclasses

import torch
from torch.func import stack_module_state

from adamtune.engine.evaluate import evaluate
from adamtune.engine.stacked import stacked_forward
from adamtune.workloads import load_workload


def test_members_share_each_call_and_match_their_own_evaluation():
    w = dataclasses.replace(load_workload("digits-mlp"), eval_batch_size=100)
    models = [w.model() for _ in range(4)]
    params, _ = stack_module_state(models)
    forward = stacked_forward(copy.deepcopy(models[0]).to("meta"))
    sizes = []

    def batched(x):
        sizes.append(x.shape[0])
        return forward(params, x)

    together = evaluate(batched, w, "cpu", batched=True, members=4)
    n = w.valid_data[0].shape[0]
    # 4 members at a time see 25 examples each: as many in one call as one model sees alone
    assert sizes == [25] * (n // 25) + ([n % 25] if n % 25 else [])
    alone = [evaluate(m, w, "cpu") for m in models]
    for name in together:
        expected = torch.cat([a[name] for a in alone])
        assert torch.allclose(together[name], expected, rtol=1e-6, atol=1e-9), name
