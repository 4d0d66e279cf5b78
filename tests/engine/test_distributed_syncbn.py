"""CPUSyncBatchNorm and create_ddp_model: statistics really are synchronised over gloo."""
import pytest
import torch
from torch import nn

from soco_d2.engine.distributed import (
    CPUSyncBatchNorm,
    convert_sync_batchnorm_for_cpu,
    create_ddp_model,
)
from soco_d2.modeling.heads import MLPHead
from _distributed import run_distributed

# One global batch; rank r gets rows [2r, 2r + 2).
GLOBAL_4D = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 2 + 1
GLOBAL_2D = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
GLOBAL_2D[2:] += 10  # rank 1's rows far from rank 0's: per-rank statistics would differ


def _bn_step(rank, x_global, make_bn):
    """One training forward/backward of a converted SyncBN on this rank's half."""
    torch.manual_seed(0)
    bn = convert_sync_batchnorm_for_cpu(make_bn())
    assert type(bn) is CPUSyncBatchNorm
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = x_global[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
    w = torch.arange(x.numel(), dtype=torch.float32).reshape(x.shape) / x.numel()
    y = bn(x)
    (y * w).sum().backward()
    return dict(
        y=y.detach(), grad_x=x.grad, grad_w=bn.weight.grad, grad_b=bn.bias.grad,
        running_mean=bn.running_mean, running_var=bn.running_var,
        tracked=int(bn.num_batches_tracked),
    )


def _make_bn_4d():
    return nn.SyncBatchNorm(3, momentum=0.3)


def _make_mlp_bn():
    return MLPHead(4, 6, 2).bn1  # the projector's norm on (M, C) vectors


def _reference(x_global, make_bn):
    """The same step in one process on the whole batch (SyncBN = plain BN there)."""
    torch.manual_seed(0)
    bn = make_bn()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = x_global.clone().requires_grad_(True)
    halves = [x[:2], x[2:]]
    w = [torch.arange(h.numel(), dtype=torch.float32).reshape(h.shape) / h.numel() for h in halves]
    y = bn(x)
    (y[:2] * w[0]).sum().add((y[2:] * w[1]).sum()).backward()
    return bn, x, y.detach()


@pytest.mark.spawns
@pytest.mark.timeout(120)
@pytest.mark.parametrize("x_global,make_bn", [(GLOBAL_4D, _make_bn_4d), (GLOBAL_2D, _make_mlp_bn)])
def test_two_ranks_match_one_process_on_the_whole_batch(x_global, make_bn):
    results = run_distributed(_bn_step, 2, args=(x_global, make_bn))
    bn, x, y = _reference(x_global, make_bn)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["y"] for r in results]), y, **tol)
    torch.testing.assert_close(torch.cat([r["grad_x"] for r in results]), x.grad, **tol)
    # DDP would average the parameter gradients over ranks; their sum is the full gradient.
    torch.testing.assert_close(results[0]["grad_w"] + results[1]["grad_w"], bn.weight.grad, **tol)
    torch.testing.assert_close(results[0]["grad_b"] + results[1]["grad_b"], bn.bias.grad, **tol)
    for r in results:
        torch.testing.assert_close(r["running_mean"], bn.running_mean, **tol)
        torch.testing.assert_close(r["running_var"], bn.running_var, **tol)  # unbiased, global
        assert r["tracked"] == 1
    # Not per-process statistics: rank 0's own rows have a very different mean.
    dims = [0] + list(range(2, x_global.dim()))
    local = bn.momentum * x_global[:2].mean(dims)
    assert not torch.allclose(results[0]["running_mean"], local, atol=1e-2)


def test_conversion_shares_tensors_and_keeps_state_dict_keys():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4), MLPHead(4, 8, 2))
    before = model.state_dict()
    params = [id(p) for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model[1].eval()
    convert_sync_batchnorm_for_cpu(model)
    assert type(model[1]) is CPUSyncBatchNorm and type(model[2].bn1) is CPUSyncBatchNorm
    assert not model[1].training and model[2].bn1.training
    assert list(model.state_dict().keys()) == list(before.keys())
    assert [id(p) for p in model.parameters()] == params
    # The optimizer built before the swap still moves the new modules' weights.
    model[2].bn1.weight.grad = torch.ones(8)
    opt.step()
    torch.testing.assert_close(model[2].bn1.weight, torch.full((8,), 0.9))
    # One process: a plain batch norm, no process group needed.
    model.train()
    out = model[2].bn1(torch.tensor([[1.0] * 8, [3.0] * 8]))
    torch.testing.assert_close(out[:, 0], torch.tensor([-0.9, 0.9]), atol=1e-3, rtol=0)


def test_create_ddp_model_single_process_is_identity():
    model = nn.Sequential(nn.Linear(2, 2), nn.SyncBatchNorm(2))
    assert create_ddp_model(model, find_unused_parameters=False) is model
    assert type(model[1]) is nn.SyncBatchNorm  # converted only for multi-process CPU runs


def _ddp_step(rank):
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.SyncBatchNorm(3))
    torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's
    for p in model.parameters():
        nn.init.normal_(p)
    ddp = create_ddp_model(model, find_unused_parameters=False)
    assert ddp.device_ids is None  # detectron2's create_ddp_model would pass [local_rank]
    ddp(GLOBAL_4D[2 * rank : 2 * rank + 2]).pow(2).mean().backward()
    return {k: v.grad for k, v in model.named_parameters()}


@pytest.mark.spawns
@pytest.mark.timeout(120)
def test_ddp_on_cpu_averages_gradients_over_ranks():
    grads = run_distributed(_ddp_step, 2)
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=0, atol=0)
    assert any(g.abs().sum() > 0 for g in grads[0].values())
