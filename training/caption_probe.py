#!/usr/bin/env python3
"""Does the model read its caption? A caption-swap probe on a training checkpoint.

48 training images (seed 5) are noised to t in {999, 900, 600, 300}; the checkpoint's EMA weights predict x0 from
the right caption, from a shuffled one (each image gets its neighbour's caption) and from "". The printed numbers are
the x0 MSE (clamped to [-1, 1]) for each: a model that uses its caption has a clearly lower error with the right
one, most of all at high noise, where the caption is the only information about the image.

  PYTHONPATH=/path/to/diffusers/src training/.venv/bin/python training/caption_probe.py --ckpt training/checkpoints-v/ckpt-NNNNNNN.pt
"""
from __future__ import annotations

import argparse
import os

import torch

import train_shapes as T

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a checkpoint written by train_shapes.py")
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(HERE), "models", "shapes", "tokenizer"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    state = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    v_pred = state["args"].get("prediction_type", "epsilon") == "v_prediction"
    T.MODEL_MAX_LENGTH = T.max_length_of(state)  # pad captions as the checkpoint was trained
    coord = T.coord_channels_of(state["model_config"])
    tok = T.load_tokenizer(args.tokenizer)
    images, captions = T.load_dataset(args.data)
    idx = torch.randint(0, images.shape[0], (48,), generator=torch.Generator().manual_seed(5))
    x0 = T.to_model_range(images[idx])
    ids = T.tokenize_all(tok, [captions[i] for i in idx])
    shuffled = ids[torch.roll(torch.arange(48), 1)]
    empty = T.tokenize_all(tok, [""] * 48)
    ab = T.alphas_cumprod()
    unet, text = T.build_models(state["model_config"])
    T.load_ema_weights(unet, text, state, args.ckpt)
    unet.eval()
    text.eval()
    print(f"{args.ckpt} (step {state['step']}, {'v' if v_pred else 'epsilon'} prediction): x0 MSE by caption")
    with torch.no_grad():
        for t in [999, 900, 600, 300]:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
            xt = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * noise
            row = []
            for name, c in [("right", ids), ("shuffled", shuffled), ("empty", empty)]:
                pred = unet(T.unet_input(xt, coord), torch.full((48,), t), encoder_hidden_states=text(c)[0]).sample
                if v_pred:
                    x0p = ab[t].sqrt() * xt - (1 - ab[t]).sqrt() * pred
                else:
                    x0p = (xt - (1 - ab[t]).sqrt() * pred) / ab[t].sqrt()
                row.append(f"{name} {torch.nn.functional.mse_loss(x0p.clamp(-1, 1), x0).item():.4f}")
            print(f"t={t}: " + " | ".join(row))


if __name__ == "__main__":
    main()
