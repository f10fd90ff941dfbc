#!/usr/bin/env python3
"""Check `train_shapes.py --warm-from`: a preset-xl model warm-started from a shapes model folder computes exactly
what that folder's model computes at the folder's own size (32x32), for the same caption.

  python3 training/check_warm_start.py [--folder models/shapes]

Prints the largest absolute difference of the text encoder's hidden states and of one U-Net call (random sample,
t = 500, CFG-sized batch of 2); both are 0 when every weight was copied and the extra transformer blocks start as
identities. Exit code 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_shapes as T  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default=os.path.join(T.REPO, "models", "shapes"))
    args = ap.parse_args()
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    flags = argparse.Namespace(preset="xl", layers_per_block=None, transformer_layers=None, heads=None, text_hidden=None,
                               text_layers=None, text_heads=None, channels=None, coord_channels=2, norm_groups=16)
    vocab, _ = T.build_bpe(T.caption_words(textures=True))
    unet, text = T.build_models(T.model_config(flags, vocab, 32))
    T.warm_start(unet, text, args.folder, vocab)
    old_unet = UNet2DConditionModel.from_pretrained(os.path.join(args.folder, "unet")).float().eval()
    old_text = CLIPTextModel.from_pretrained(os.path.join(args.folder, "text_encoder")).float().eval()
    old_vocab, _ = T.build_bpe(T.caption_words(textures=False))
    words = "a large red circle at the top left on a white background".split()

    def ids(v: dict[str, int]) -> torch.Tensor:
        return torch.tensor([[v[T.BOS]] + [v[w + "</w>"] for w in words] + [v[T.EOS]] * 4])

    with torch.no_grad():
        text_diff = (text(ids(vocab))[0] - old_text(ids(old_vocab))[0]).abs().max().item()
        ctx = old_text(ids(old_vocab))[0].expand(2, -1, -1)
        x, t = torch.randn(2, 5, 32, 32), torch.tensor([500, 500])
        unet_diff = (unet.eval()(x, t, ctx).sample - old_unet(x, t, ctx).sample).abs().max().item()
    print(f"text encoder max |diff| {text_diff:.3g}, U-Net max |diff| {unet_diff:.3g}")
    sys.exit(0 if text_diff == 0 and unet_diff == 0 else 1)


if __name__ == "__main__":
    main()
