#!/usr/bin/env python3
"""Train the feature extractor behind atedm's shapes Frechet distance (models/shapes-features/features.onnx).

A small CNN is trained to classify the attributes of synthetic shapes images (src/shapes) from their captions; its
pooled penultimate layer (128 floats) is the feature space in which generated images are compared with real
renders of the same captions, the way data-set-specific FIDs are made (a classifier trained on the data, not
Inception).

Labels, parsed from each caption (the grammar of src/shapes/grammar.ts):
  * every image: background (3), object count (1 or 2);
  * one-object images: colour (8), shape (4), size (small / large), position (3x3 grid cell, 9);
  * two-object images: axis (horizontal for "left of" / "right of", vertical for "above" / "below"), and colour and
    shape of the first object (the left one, or the top one) and of the second. The caption's subject is not
    visible in the image ("A left of B" and "B right of A" render alike), so the objects are ordered by place.
A head that does not apply to an image (size of a two-object scene, ...) is left out of its loss and accuracy.

Network (input `images` float32 [N, 3, 32, 32] RGB in [0, 1]; the graph maps it to [-1, 1] itself):
  stem  conv3x3 3->32 + a learned position map [32, 32, 32] (global pooling alone would lose where objects are)
  stage conv3x3/2 32->64, conv3x3 64->64         (16x16)
  stage conv3x3/2 64->128, conv3x3 128->128      (8x8)
  each conv: BatchNorm + ReLU (BatchNorm folded into the conv at export); global average pool -> `features` [N, 128]
  heads: one linear layer per attribute (training only; not exported)

Held-out split: the captions with crc32(caption) % 10 == 0 (about 10 % of the images), so no held-out caption is
seen in training. See training/README.md ("Feature extractor for the Frechet distance") for the command.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import time
import zlib

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_shapes.py: spinning OpenMP threads stall on a busy machine

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The caption vocabulary, as train_shapes.py mirrors it from src/shapes/grammar.ts.
from train_shapes import BACKGROUNDS, COLORS, POSITIONS, RELATIONS, SHAPES, SIZES  # noqa: E402


def alt(words: list[str]) -> str:
    return "(" + "|".join(words) + ")"


ONE_RE = re.compile(f"^a {alt(SIZES)} {alt(COLORS)} {alt(SHAPES)} at the {alt(POSITIONS)} on a {alt(BACKGROUNDS)} background$")
TWO_RE = re.compile(f"^a {alt(COLORS)} {alt(SHAPES)} {alt(RELATIONS)} a {alt(COLORS)} {alt(SHAPES)} on a {alt(BACKGROUNDS)} background$")

# head name -> number of classes
HEADS = {
    "background": 3,
    "count": 2,
    "color": 8,
    "shape": 4,
    "size": 2,
    "position": 9,
    "axis": 2,
    "first_color": 8,
    "first_shape": 4,
    "second_color": 8,
    "second_shape": 4,
}


def labels_of(caption: str) -> dict[str, int]:
    """Class index per head; -1 where the head does not apply."""
    out = {k: -1 for k in HEADS}
    m = ONE_RE.match(caption)
    if m:
        size, color, shape, pos, bg = m.groups()
        out.update(background=BACKGROUNDS.index(bg), count=0, color=COLORS.index(color), shape=SHAPES.index(shape),
                   size=SIZES.index(size), position=POSITIONS.index(pos))
        return out
    m = TWO_RE.match(caption)
    if not m:
        raise SystemExit(f"caption outside the grammar: {caption!r}")
    ca, sa, rel, cb, sb, bg = m.groups()
    a, b = (COLORS.index(ca), SHAPES.index(sa)), (COLORS.index(cb), SHAPES.index(sb))
    first, second = (a, b) if rel in ("left of", "above") else (b, a)
    out.update(background=BACKGROUNDS.index(bg), count=1, axis=0 if rel in ("left of", "right of") else 1,
               first_color=first[0], first_shape=first[1], second_color=second[0], second_shape=second[1])
    return out


def load_images(path: str) -> np.ndarray:
    """The `images` tensor (U8 [N, 32, 32, 3]) of an atedm shapes.safetensors file, read without the safetensors package."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        info = header["images"]
        if info["dtype"] != "U8" or len(info["shape"]) != 4 or info["shape"][1:] != [32, 32, 3]:
            raise SystemExit(f"{path}: expected images U8 [N, 32, 32, 3], got {info['dtype']} {info['shape']}")
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        data = np.frombuffer(bytearray(f.read(end - start)), dtype=np.uint8)
    return data.reshape(info["shape"])


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FeatureNet(nn.Module):
    def __init__(self, width: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        c1, c2, c3 = width
        self.stem = nn.Conv2d(3, c1, 3, 1, 1, bias=False)
        self.pos = nn.Parameter(torch.zeros(1, c1, 32, 32))
        self.stem_bn = nn.BatchNorm2d(c1)
        self.body = nn.Sequential(conv_bn(c1, c2, 2), conv_bn(c2, c2), conv_bn(c2, c3, 2), conv_bn(c3, c3))
        self.dim = c3
        self.heads = nn.ModuleDict({k: nn.Linear(c3, n) for k, n in HEADS.items()})

    def features(self, x01: torch.Tensor) -> torch.Tensor:
        """x01: [N, 3, 32, 32] RGB in [0, 1] -> [N, 128]."""
        x = self.stem(x01 * 2 - 1) + self.pos
        x = F.relu(self.stem_bn(x))
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x01)
        return {k: h(f) for k, h in self.heads.items()}


class Exported(nn.Module):
    """What goes into the ONNX file: features only, BatchNorm folded into the convolutions."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        net = net.eval()
        self.stem = fold(net.stem, net.stem_bn)
        self.pos = nn.Parameter(net.pos.detach() * (net.stem_bn.weight / torch.sqrt(net.stem_bn.running_var + net.stem_bn.eps)).view(1, -1, 1, 1))
        self.body = nn.Sequential(*[nn.Sequential(fold(block[0], block[1]), nn.ReLU()) for block in net.body])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(images * 2 - 1) + self.pos)
        return self.body(x).mean(dim=(2, 3))


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        out.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        out.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return out


def to_input(batch_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch_u8).permute(0, 3, 1, 2).float().div_(255)


@torch.no_grad()
def evaluate(net: FeatureNet, images: np.ndarray, labels: dict[str, np.ndarray], batch: int = 1000) -> dict[str, float]:
    net.eval()
    correct = {k: 0 for k in HEADS}
    total = {k: 0 for k in HEADS}
    for i in range(0, len(images), batch):
        out = net(to_input(images[i : i + batch]))
        for k in HEADS:
            y = torch.from_numpy(labels[k][i : i + batch])
            m = y >= 0
            correct[k] += int((out[k].argmax(1)[m] == y[m]).sum())
            total[k] += int(m.sum())
    net.train()
    return {k: correct[k] / max(total[k], 1) for k in HEADS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/featdata", help="folder written by `atedm export-shapes`")
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "shapes-features"), help="folder for features.onnx")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--max-minutes", type=float, default=20, help="training-time budget; the LR schedule follows it too")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.995, help="stop after an epoch where every held-out accuracy reaches this")
    ap.add_argument("--golden", type=int, default=0, metavar="K",
                    help="instead of training: print the features that --out's features.onnx gives (run in PyTorch) for the "
                         "first K images of --data, the reference test/features.test.ts compares atedm's preprocessing with")
    args = ap.parse_args()
    if args.golden:
        golden(args)
        return

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    images = load_images(os.path.join(args.data, "shapes.safetensors"))
    with open(os.path.join(args.data, "captions.json"), encoding="utf-8") as f:
        captions = json.load(f)
    if len(captions) != len(images):
        raise SystemExit(f"{args.data}: {len(images)} images but {len(captions)} captions")
    parsed = [labels_of(c) for c in captions]
    labels = {k: np.array([p[k] for p in parsed], dtype=np.int64) for k in HEADS}
    held = np.array([zlib.crc32(c.encode()) % 10 == 0 for c in captions])
    tr_idx, ho_idx = np.flatnonzero(~held), np.flatnonzero(held)
    tr_img, ho_img = images[tr_idx], images[ho_idx]
    tr_lab = {k: v[tr_idx] for k, v in labels.items()}
    ho_lab = {k: v[ho_idx] for k, v in labels.items()}
    print(f"train {len(tr_idx)} images, held-out {len(ho_idx)} images ({len({captions[i] for i in ho_idx})} captions)", flush=True)

    net = FeatureNet()
    decay = [p for n, p in net.named_parameters() if p.ndim > 1 and n != "pos"]
    rest = [p for n, p in net.named_parameters() if not (p.ndim > 1 and n != "pos")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0}], lr=args.lr)
    steps_per_epoch = len(tr_idx) // args.batch
    total_steps = steps_per_epoch * args.epochs
    t0 = time.time()
    step = 0
    acc: dict[str, float] = {}
    for epoch in range(args.epochs):
        order = rng.permutation(len(tr_idx))
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            minutes = (time.time() - t0) / 60
            progress = max(step / total_steps, minutes / args.max_minutes)
            if progress >= 1:
                break
            lr = args.lr * min(1.0, (step + 1) / 100) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[b * args.batch : (b + 1) * args.batch]
            out = net(to_input(tr_img[idx]))
            loss = sum(F.cross_entropy(out[k], torch.from_numpy(tr_lab[k][idx]), ignore_index=-1) for k in HEADS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {loss_sum / (b + 1):.4f} lr {lr:.2e} {(time.time() - t0) / 60:.1f} min", flush=True)
        acc = evaluate(net, ho_img, ho_lab)
        print(f"epoch {epoch} held-out " + " ".join(f"{k} {v:.4f}" for k, v in acc.items()), flush=True)
        if min(acc.values()) >= args.target or (time.time() - t0) / 60 >= args.max_minutes:
            break
    minutes = (time.time() - t0) / 60

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "features.onnx")
    export(net, path)
    summary = {"steps": step, "minutes": round(minutes, 1), "train_images": len(tr_idx), "heldout_images": len(ho_idx),
               "heldout_accuracy": {k: round(v, 4) for k, v in acc.items()}, "onnx_bytes": os.path.getsize(path),
               "torch": torch.__version__}
    print(json.dumps(summary), flush=True)


def golden(args: argparse.Namespace) -> None:
    """Features of the first --golden images of --data: features.onnx's weights in the PyTorch module, fed as in training."""
    import onnx
    from onnx import numpy_helper

    torch.set_num_threads(args.threads)
    proto = onnx.load(os.path.join(args.out, "features.onnx"))
    model = Exported(FeatureNet()).eval()
    model.load_state_dict({t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer})
    images = load_images(os.path.join(args.data, "shapes.safetensors"))[: args.golden]
    with torch.no_grad():
        f = model(to_input(images))
    print(json.dumps({"features_first16": [[round(v, 5) for v in row[:16].tolist()] for row in f],
                      "norm": [round(float(row.norm()), 5) for row in f]}))


def export(net: FeatureNet, path: str) -> None:
    import onnx

    net.eval()
    model = Exported(net).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        err = float((model(x) - net.features(x)).abs().max())
    if err > 1e-4:
        raise SystemExit(f"BatchNorm folding changed the features by {err}")
    tmp = path + ".tmp"
    torch.onnx.export(model, (x,), tmp, input_names=["images"], output_names=["features"], opset_version=17,
                      dynamic_axes={"images": {0: "N"}, "features": {0: "N"}}, dynamo=False)
    proto = onnx.load(tmp)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    os.remove(tmp)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", flush=True)


if __name__ == "__main__":
    main()
