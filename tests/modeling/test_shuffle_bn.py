"""Shuffle-BN parts: shuffle/unshuffle are inverse (1 and 2 processes; queue image ids are
gathered in rank order), SplitBatchNorm equals BatchNorm run on the sub-batches, and converting a
detectron2 ResNet keeps its state dict."""
import os
import socket
import tempfile
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from soco_d2.modeling.comm import concat_all_gather
from soco_d2.modeling.queue import KeyQueue, gather_ids, image_ids
from soco_d2.modeling.shuffle_bn import (
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_to_split_batchnorm,
)


# ---------------------------------------------------------------- shuffle, one process
def test_single_process_shuffle_permutes_and_unshuffle_inverts_exactly():
    x = torch.arange(16.0)[:, None, None] * torch.ones(16, 2, 3)
    xs, idx = batch_shuffle(x)
    assert not torch.equal(xs, x)  # 16! permutations: identity has probability ~1e-13
    assert torch.equal(xs[:, 0, 0].sort().values, torch.arange(16.0))
    assert torch.equal(batch_unshuffle(xs, idx), x)
    # outputs computed on the shuffled rows come back in the original order
    assert torch.equal(batch_unshuffle(xs.sum(dim=(1, 2)), idx), x.sum(dim=(1, 2)))


# ---------------------------------------------------------------- shuffle, two processes
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shuffle_worker(rank: int, world: int, port: int, out_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank,
        timeout=timedelta(seconds=60),
    )
    try:
        torch.manual_seed(100 + rank)  # different RNGs: only rank 0's permutation may count
        x = torch.arange(4.0)[:, None] + 10 * rank  # rank 0: 0..3, rank 1: 10..13
        xs, idx = batch_shuffle(x)
        back = batch_unshuffle(xs * 2, idx)
        gathered = concat_all_gather(x)
        # the image ids of MODEL.MOCO.EXCLUDE_SAME_IMAGE reach every rank's ring as the keys do
        ring = KeyQueue(1, 8, track_ids=True)
        ids = image_ids([{"file_name": f"rank{rank}_{i}.jpg"} for i in range(4)])
        ring.enqueue(gathered, gather_ids(ids))
        torch.save(dict(x=x, xs=xs, idx=idx, back=back, gathered=gathered, ring_ids=ring.ids),
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.spawns
def test_two_process_shuffle_is_global_and_unshuffle_returns_own_rows():
    world = 2
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(
            _shuffle_worker, nprocs=world, args=(world, _free_port(), out_dir), join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + 120
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > deadline:
                    raise TimeoutError("gloo shuffle workers still running after 120 s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join()
        r = [torch.load(os.path.join(out_dir, f"rank{i}.pt")) for i in range(world)]
    everything = torch.cat([r[0]["x"], r[1]["x"]])
    assert torch.equal(r[0]["gathered"], everything) and torch.equal(r[1]["gathered"], everything)
    # one permutation for both ranks (rank 0's, broadcast), and the slices cover the global batch
    assert torch.equal(r[0]["idx"], r[1]["idx"])
    shuffled = torch.cat([r[0]["xs"], r[1]["xs"]])
    assert torch.equal(shuffled.flatten().sort().values, everything.flatten())
    assert torch.equal(everything[torch.argsort(r[0]["idx"])], shuffled)
    for i in range(world):
        assert torch.equal(r[i]["back"], 2 * r[i]["x"])
    names = [{"file_name": f"rank{j}_{i}.jpg"} for j in range(world) for i in range(4)]
    assert torch.equal(r[0]["ring_ids"], image_ids(names))  # rank order, as the keys
    assert torch.equal(r[1]["ring_ids"], r[0]["ring_ids"])


# ---------------------------------------------------------------- SplitBatchNorm
def _init_affine(bn):
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_mean.copy_(torch.tensor([0.2, -0.1, 0.0]))
        bn.running_var.copy_(torch.tensor([1.5, 0.5, 2.0]))
    return bn


def test_split_bn_equals_batchnorm_on_each_split():
    s = 4
    x = torch.randn(8, 3, 5, 5) * 3 + torch.arange(8.0)[:, None, None, None]
    split = _init_affine(SplitBatchNorm(3, s, momentum=0.3)).train()
    refs = [_init_affine(nn.BatchNorm2d(3, momentum=0.3)).train() for _ in range(s)]
    xa = x.clone().requires_grad_(True)
    out = split(xa)
    out.pow(2).sum().backward()
    for j, ref in enumerate(refs):
        xj = x[j::s].clone()  # split j = images j, j + s, ...
        y = ref(xj)
        torch.testing.assert_close(out[j::s], y, atol=1e-5, rtol=1e-5)
        y.pow(2).sum().backward()
    mean = lambda name: sum(getattr(r, name) for r in refs) / s  # noqa: E731
    torch.testing.assert_close(split.running_mean, mean("running_mean"))
    torch.testing.assert_close(split.running_var, mean("running_var"))
    torch.testing.assert_close(split.weight.grad, sum(r.weight.grad for r in refs))
    torch.testing.assert_close(split.bias.grad, sum(r.bias.grad for r in refs))
    assert int(split.num_batches_tracked) == 1
    # statistics really are per split: plain BN over the whole batch differs
    whole = _init_affine(nn.BatchNorm2d(3, momentum=0.3)).train()
    assert not torch.allclose(whole(x), out.detach(), atol=1e-3)


def test_split_bn_eval_is_plain_batchnorm_and_state_dict_keys_match():
    x = torch.randn(3, 3, 4, 4)  # any batch size in eval
    split = _init_affine(SplitBatchNorm(3, 4)).eval()
    ref = _init_affine(nn.BatchNorm2d(3)).eval()
    torch.testing.assert_close(split(x), ref(x))
    assert split.state_dict().keys() == ref.state_dict().keys()


def test_split_bn_batch_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.MOCO.SPLIT_BN"):
        SplitBatchNorm(3, 4).train()(torch.randn(6, 3, 2, 2))


def test_convert_resnet_keeps_weights_and_keys():
    from detectron2.modeling import build_backbone

    from soco_d2.config import get_ssl_cfg

    cfg = get_ssl_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    net = build_backbone(cfg)
    for m in net.modules():  # non-trivial statistics, so a lost buffer would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    y0 = net.eval()(x)["res5"]
    out = convert_to_split_batchnorm(net, 2)
    assert out is net
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is SplitBatchNorm and m.num_splits == 2 for m in bns)
    after = net.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k
    torch.testing.assert_close(net(x)["res5"], y0)
    assert not net.training
