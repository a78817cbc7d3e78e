#!/usr/bin/env python3
"""Where PyTorch's training step of the port's MobileNet-0.25 spends its time, to set beside
`profile_step`'s figures for ours: the step of ../shared/tools/ref/torch_train_bench.py
(forward, multi-task loss, backward, SGD) under torch.profiler, CPU time summed per layer kind
(convolutions split by kernel size and groups, BatchNorm, LeakyReLU), forward and backward.

usage: torch_profile_step.py [--threads 2] [--batch 8] [--size 640] [--steps 3]
"""

import argparse
import collections
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

SHARED = os.environ.get(
    "SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
)
sys.path.insert(0, os.path.join(SHARED, "tools", "ref"))
from torch_train_bench import RetinaFace  # noqa: E402


def kind(m):
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        if m.groups > 1:
            return f"depthwise {k}x{k}"
        if m.out_channels in (4, 8, 20) and k == 1:
            return "head 1x1"
        return "stem 3x3" if m.in_channels == 3 else f"dense {k}x{k}"
    if isinstance(m, nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(m, nn.LeakyReLU):
        return "LeakyReLU"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = RetinaFace().train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, a.size, a.size) * 50
    with torch.no_grad():
        loc, conf, ldm = net(x)
    lab = (torch.rand(a.batch, conf.shape[1]) < 0.01).long()
    tloc, tldm = torch.randn_like(loc), torch.randn_like(ldm)
    # Forward time per layer kind from module hooks (record_function ranges); backward time
    # per kind from the convolution backward's weight shape.
    for m in net.modules():
        k = kind(m)
        if k:
            m.register_forward_pre_hook(
                lambda mod, inp, k=k: mod.__dict__.__setitem__(
                    "_rf", torch.autograd.profiler.record_function("fwd " + k).__enter__()
                )
            )
            m.register_forward_hook(lambda mod, inp, out: mod._rf.__exit__(None, None, None))

    def step():
        loc, conf, ldm = net(x)
        pos = lab > 0
        loss = (
            F.cross_entropy(conf.reshape(-1, 2), lab.reshape(-1))
            + 2.0 * F.smooth_l1_loss(loc[pos], tloc[pos])
            + F.smooth_l1_loss(ldm[pos], tldm[pos])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
    ) as prof:
        for _ in range(a.steps):
            with torch.autograd.profiler.record_function("step"):
                step()
    totals = collections.Counter()
    for e in prof.key_averages(group_by_input_shape=True):
        ms = e.cpu_time_total / 1e3 / a.steps
        if e.key.startswith("fwd ") or e.key == "step":
            totals[e.key] += ms
        elif e.key == "aten::convolution_backward":
            co, cig, k = e.input_shapes[2][0], e.input_shapes[2][1], e.input_shapes[2][2]
            if cig == 1 and co > 1:
                name = f"depthwise {k}x{k}"
            elif cig == 3:
                name = "stem 3x3"
            elif co in (4, 8, 20) and k == 1:
                name = "head 1x1"
            else:
                name = f"dense {k}x{k}"
            totals["bwd " + name] += ms
        elif e.key in ("aten::native_batch_norm_backward", "aten::leaky_relu_backward"):
            totals["bwd " + e.key[6:]] += ms
    print(
        f"torch {torch.__version__}, {a.threads} threads, batch {a.batch} at {a.size}x{a.size}:"
        " ms per step, forward and backward by layer kind"
    )
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        if v >= 1.0:
            print(f"  {k:<50} {v:8.1f}")


if __name__ == "__main__":
    main()
