#!/usr/bin/env python3
"""PyTorch CPU training throughput of the port's ResNet-50 RetinaFace (torchvision's ResNet-50
body, C3-C5 into a 256-channel FPN with ReLU, SSH context modules, 1x1 heads with two anchors
per cell): forward + the multi-task loss over every anchor + backward + SGD step, on synthetic
targets, as ../shared/tools/ref/torch_train_bench.py measures MobileNet-0.25.

usage: torch_resnet50_step.py [--threads N] [--iters K] [--batch B] [--size S]
Prints one line ending in "= X images/s"."""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(cin, cout, k, stride=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(cbr(cin, width, 1), cbr(width, width, 3, stride), cbr(width, cout, 1, act=False))
        self.skip = cbr(cin, cout, 1, stride, act=False) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


def stage(cin, width, blocks, stride):
    mods = [Bottleneck(cin, width, stride)] + [Bottleneck(width * 4, width, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*mods)


class Context(nn.Module):
    """SSH: a 3x3 branch (half the channels), and 5x5 / 7x7 branches as stacked 3x3s."""
    def __init__(self, c):
        super().__init__()
        self.a = cbr(c, c // 2, 3, act=False)
        self.b1 = cbr(c, c // 4, 3)
        self.b2 = cbr(c // 4, c // 4, 3, act=False)
        self.c1 = cbr(c // 4, c // 4, 3)
        self.c2 = cbr(c // 4, c // 4, 3, act=False)

    def forward(self, x):
        b = self.b1(x)
        return F.relu(torch.cat([self.a(x), self.b2(b), self.c2(self.c1(b))], 1))


class RetinaFaceR50(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layer1, self.layer2 = stage(64, 64, 3, 1), stage(256, 128, 4, 2)
        self.layer3, self.layer4 = stage(512, 256, 6, 2), stage(1024, 512, 3, 2)
        self.lat = nn.ModuleList([cbr(c, 256, 1) for c in (512, 1024, 2048)])
        self.merge = nn.ModuleList([cbr(256, 256, 3) for _ in range(2)])
        self.ctx = nn.ModuleList([Context(256) for _ in range(3)])
        self.heads = nn.ModuleList([nn.ModuleList([nn.Conv2d(256, 2 * k, 1) for _ in range(3)]) for k in (4, 2, 10)])

    def forward(self, x):
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        p3, p4, p5 = (l(c) for l, c in zip(self.lat, (c3, c4, c5)))
        p4 = self.merge[1](p4 + F.interpolate(p5, size=p4.shape[2:], mode='nearest'))
        p3 = self.merge[0](p3 + F.interpolate(p4, size=p3.shape[2:], mode='nearest'))
        feats = [m(p) for m, p in zip(self.ctx, (p3, p4, p5))]
        n = x.shape[0]
        out = []
        for heads, k in zip(self.heads, (4, 2, 10)):
            out.append(torch.cat([h(f).permute(0, 2, 3, 1).reshape(n, -1, k) for h, f in zip(heads, feats)], 1))
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--iters', type=int, default=4)
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--size', type=int, default=640)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = RetinaFaceR50().train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, a.size, a.size) * 50
    with torch.no_grad():
        loc, conf, ldm = net(x)
    anchors = conf.shape[1]
    lab = (torch.rand(a.batch, anchors) < 0.01).long()
    tloc, tldm = torch.randn_like(loc), torch.randn_like(ldm)
    times = []
    for i in range(a.iters + 1):
        t = time.perf_counter()
        loc, conf, ldm = net(x)
        pos = lab > 0
        loss = (F.cross_entropy(conf.reshape(-1, 2), lab.reshape(-1)) + 2.0 * F.smooth_l1_loss(loc[pos], tloc[pos])
                + F.smooth_l1_loss(ldm[pos], tldm[pos]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    print('torch %s ResNet-50, %d threads, batch %d at %dx%d, %d anchors: median %.2f s/iter = %.2f images/s' % (
        torch.__version__, a.threads, a.batch, a.size, a.size, anchors, med, a.batch / med))


if __name__ == '__main__':
    main()
