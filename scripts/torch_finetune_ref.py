#!/usr/bin/env python3
"""The port's fine-tuning recipe in PyTorch, as a reference for `retinaface train --init`:
one pass over WIDER FACE-format training images from a port-layout .pth checkpoint, with the
port's augmentation (square crop at 0.3-1.0 of the short side, photometric distortion,
mirror), anchor matching (IoU 0.35), multi-task loss (OHEM 7:1, boxes weighted 2) and SGD
(momentum 0.9, weight decay 5e-4). Saves the result as a .pth that `retinaface eval widerface
--model` reads, so both trainers are scored by the same evaluation.

The network is the one of ../shared/tools/ref/pth_ref.py (module names as in the checkpoints).
The photometric distortion is brightness, contrast and saturation; the port's hue shift is
left out (it needs OpenCV's HSV conversion).

usage: torch_finetune_ref.py CHECKPOINT.pth --data DIR --out OUT.pth
       [--lr 1e-4] [--batch 8] [--epochs 1] [--batch-norm train|frozen] [--seed 0] [--threads 2]
"""

import argparse
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

SHARED = os.environ.get(
    "SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
)
sys.path.insert(0, os.path.join(SHARED, "tools", "ref"))
from pth_ref import Net  # noqa: E402

SIZE, MEAN_BGR = 640, np.array([104.0, 117.0, 123.0], np.float32)
SCALES = [0.3, 0.45, 0.6, 0.8, 1.0]
MIN_SIZES, STEPS, VARIANCE = [[16, 32], [64, 128], [256, 512]], [8, 16, 32], (0.1, 0.2)


def read_labels(data):
    """[(path, boxes (n,4) x1y1x2y2, landmarks (n,10), has_landmarks (n,))] from data/label.txt."""
    items, cur = [], None
    for line in open(os.path.join(data, "label.txt")):
        line = line.strip()
        if line.startswith("#"):
            cur = (os.path.join(data, "images", line[1:].strip()), [])
            items.append(cur)
        elif line and cur is not None:
            v = [float(t) for t in line.split()]
            cur[1].append(v)
    out = []
    for path, rows in items:
        b = np.zeros((len(rows), 4), np.float32)
        lm = np.zeros((len(rows), 10), np.float32)
        has = np.zeros(len(rows), bool)
        for i, v in enumerate(rows):
            b[i] = [v[0], v[1], v[0] + v[2], v[1] + v[3]]
            if len(v) >= 19:
                lm[i] = [v[4], v[5], v[7], v[8], v[10], v[11], v[13], v[14], v[16], v[17]]
                has[i] = v[4] >= 0
        out.append((path, b, lm, has))
    return out


def iof(a, roi):
    lt = np.maximum(a[:, :2], roi[:2])
    rb = np.minimum(a[:, 2:], roi[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    return inter / np.maximum(np.prod(a[:, 2:] - a[:, :2], 1), 1e-12)


def crop(img, b, lm, has, rng):
    h, w = img.shape[:2]
    for _ in range(250):
        side = int(rng.choice(SCALES) * min(h, w))
        x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
        roi = np.array([x0, y0, x0 + side, y0 + side], np.float32)
        if not (iof(b, roi) >= 1).any():
            continue
        c = (b[:, :2] + b[:, 2:]) / 2
        keep = (roi[:2] < c).all(1) & (c < roi[2:]).all(1)
        if not keep.any():
            continue
        bt = b[keep].copy()
        bt[:, :2] = np.maximum(bt[:, :2], roi[:2]) - roi[:2]
        bt[:, 2:] = np.minimum(bt[:, 2:], roi[2:]) - roi[:2]
        lt = lm[keep].copy().reshape(-1, 5, 2) - roi[:2]
        size_ok = np.minimum(bt[:, 2] - bt[:, 0] + 1, bt[:, 3] - bt[:, 1] + 1) / side * SIZE > 0
        if not size_ok.any():
            continue
        return (
            img[y0 : y0 + side, x0 : x0 + side],
            bt[size_ok],
            lt[size_ok].reshape(-1, 10),
            has[keep][size_ok],
            False,
        )
    return img, b, lm, has, True


def distort(img, rng):
    img = img.astype(np.float32)

    def bright(x):
        return x + rng.uniform(-32, 32) if rng.random() < 0.5 else x

    def contrast(x):
        return x * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else x

    def saturation(x):
        if rng.random() >= 0.5:
            return x
        g = x @ np.array([0.114, 0.587, 0.299], np.float32)
        return g[..., None] + (x - g[..., None]) * rng.uniform(0.5, 1.5)

    ops = [bright, contrast, saturation] if rng.random() < 0.5 else [bright, saturation, contrast]
    for op in ops:
        img = np.clip(op(img), 0, 255)
    return img


def sample(item, rng):
    path, b, lm, has = item
    img = np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1]
    img, b, lm, has, pad = crop(img, b, lm, has, rng)
    img = distort(img, rng)
    if pad:
        h, w = img.shape[:2]
        s = max(h, w)
        sq = np.empty((s, s, 3), np.float32)
        sq[:] = MEAN_BGR
        sq[:h, :w] = img
        img = sq
    h, w = img.shape[:2]
    resample = rng.choice([Image.BILINEAR, Image.BICUBIC, Image.NEAREST, Image.LANCZOS, Image.BOX])
    img = (
        np.asarray(
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), resample),
            np.float32,
        )
        - MEAN_BGR
    )
    b = b.copy()
    lm = lm.copy().reshape(-1, 5, 2)
    if rng.random() < 0.5:
        img = img[:, ::-1]
        b[:, [0, 2]] = w - b[:, [2, 0]]
        lm[:, :, 0] = w - lm[:, :, 0]
        lm = lm[:, [1, 0, 2, 4, 3]]
    b /= [w, h, w, h]
    lm = (lm / [w, h]).reshape(-1, 10)
    return (
        torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
        torch.from_numpy(b).float(),
        torch.from_numpy(lm).float(),
        torch.from_numpy(has),
    )


def priors():
    out = []
    for ms, st in zip(MIN_SIZES, STEPS):
        n = math.ceil(SIZE / st)
        for i in range(n):
            for j in range(n):
                for m in ms:
                    out.append([(j + 0.5) * st / SIZE, (i + 0.5) * st / SIZE, m / SIZE, m / SIZE])
    return torch.tensor(out)


def iou(a, p):
    lt = torch.max(a[:, None, :2], p[None, :, :2])
    rb = torch.min(a[:, None, 2:], p[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)

    def area(x):
        return (x[:, 2:] - x[:, :2]).prod(1)

    return inter / (area(a)[:, None] + area(p)[None] - inter)


def match(b, lm, has, pr, pf):
    """Per prior: class (0 background, 1 face with landmarks, -1 face without), box and
    landmark targets."""
    ov = iou(b, pf)
    best_prior_ov, best_prior = ov.max(1)
    valid = best_prior_ov >= 0.2
    if not valid.any():
        return (
            torch.zeros(len(pr), dtype=torch.long),
            torch.zeros(len(pr), 4),
            torch.zeros(len(pr), 10),
        )
    best_ov, best_gt = ov.max(0)
    best_ov[best_prior[valid]] = 2
    for g in torch.nonzero(valid).flatten().tolist():
        best_gt[best_prior[g]] = g
    label = torch.where(has[best_gt], 1, -1)
    label[best_ov < 0.35] = 0
    m = b[best_gt]
    c = ((m[:, :2] + m[:, 2:]) / 2 - pr[:, :2]) / (VARIANCE[0] * pr[:, 2:])
    wh = torch.log((m[:, 2:] - m[:, :2]) / pr[:, 2:]) / VARIANCE[1]
    pts = (lm[best_gt].view(-1, 5, 2) - pr[:, None, :2]) / (VARIANCE[0] * pr[:, None, 2:])
    return label, torch.cat([c, wh], 1), pts.reshape(-1, 10)


def multibox_loss(loc, conf, ldm, label, tloc, tldm):
    pos_l = label > 0
    n_l = max(int(pos_l.sum()), 1)
    loss_ldm = F.smooth_l1_loss(ldm[pos_l], tldm[pos_l], reduction="sum") / n_l
    pos = label != 0
    t = pos.long()
    loss_loc = F.smooth_l1_loss(loc[pos], tloc[pos], reduction="sum")
    with torch.no_grad():
        lc = torch.logsumexp(conf, -1) - conf.gather(2, t[..., None]).squeeze(-1)
        lc[pos] = 0
        rank = lc.argsort(1, descending=True).argsort(1)
        n_neg = (7 * pos.sum(1, keepdim=True)).clamp(max=pos.shape[1] - 1)
        neg = rank < n_neg
    sel = pos | neg
    loss_c = F.cross_entropy(conf[sel], t[sel], reduction="sum")
    n = max(int(pos.sum()), 1)
    return 2.0 * loss_loc / n + loss_c / n + loss_ldm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-norm", choices=["train", "frozen"], default="train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    sd = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    sd = sd.get("state_dict", sd)
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    net = Net()
    net.load_state_dict(sd, strict=True)
    net.train()
    logits = []
    for h in (
        net.ClassHead
    ):  # keep the class head's raw output for the loss (Net's forward ends in softmax)
        h.conv1x1.register_forward_hook(lambda m, i, o: logits.append(o))
    if a.batch_norm == "frozen":
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
    opt = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad], lr=a.lr, momentum=0.9, weight_decay=5e-4
    )
    items = read_labels(a.data)
    pr = priors()
    pf = torch.cat([pr[:, :2] - pr[:, 2:] / 2, pr[:, :2] + pr[:, 2:] / 2], 1)
    step = 0
    for _ in range(a.epochs):
        order = list(range(len(items)))
        rng.shuffle(order)
        for s in range(0, len(order) - a.batch + 1, a.batch):
            xs, labels, tlocs, tldms = [], [], [], []
            for i in order[s : s + a.batch]:
                x, b, lm, has = sample(items[i], rng)
                lab, tl, td = match(b, lm, has, pr, pf)
                xs.append(x)
                labels.append(lab)
                tlocs.append(tl)
                tldms.append(td)
            logits.clear()
            loc, _, ldm = net(torch.stack(xs))
            n = loc.shape[0]
            conf = torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1, 2) for o in logits], 1)
            loss = multibox_loss(
                loc, conf, ldm, torch.stack(labels), torch.stack(tlocs), torch.stack(tldms)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            print(f"step {step} loss {loss.item():.4f}", file=sys.stderr, flush=True)
    torch.save(net.state_dict(), a.out)


if __name__ == "__main__":
    main()
