#!/usr/bin/env python3
"""Sample images from an exported shapes model folder (diffusers layout, no VAE: the UNet works in pixel space).

Loads the folder with the plain diffusers / transformers classes (UNet2DConditionModel, CLIPTextModel, CLIPTokenizer,
EulerDiscreteScheduler) and runs a classifier-free-guided Euler loop, so it checks the exported files end to end.

  python training/sample_shapes.py --model models/shapes --out /tmp/shapes_samples.png
  python training/sample_shapes.py --prompt "a large red circle at the top left on a white background" --n 4
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

DEFAULT_PROMPTS = [
    "a large red circle at the top left on a white background",
    "a small blue square at the bottom right on a black background",
    "a large yellow triangle at the center on a gray background",
    "a small green cross at the top on a white background",
    "a large purple square at the left on a gray background",
    "a small white circle at the bottom on a black background",
    "a red circle left of a blue square on a white background",
    "a green triangle above a orange cross on a black background",
]


@torch.inference_mode()
def sample(model_dir: str, prompts: list[str], steps: int, guidance: float, seed: int, threads: int,
           latents: str | None = None, save_latents: str | None = None) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from train_shapes import unet_input  # the CoordConv maps, exactly as in training

    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "model_index.json")) as f:
        index = json.load(f)
    if index.get("vae", [None, None])[0] is not None:
        raise SystemExit(f"{model_dir} has a VAE: this script is for the pixel-space shapes model")
    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet"), torch_dtype=torch.float32).eval()
    text = CLIPTextModel.from_pretrained(os.path.join(model_dir, "text_encoder"), torch_dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"))
    sched = EulerDiscreteScheduler.from_pretrained(os.path.join(model_dir, "scheduler"))
    defaults_path = os.path.join(model_dir, "atedm.json")
    defaults = json.load(open(defaults_path)) if os.path.exists(defaults_path) else {}
    coord = int(defaults.get("coord_channels", 0))  # the UNet also reads column/row maps appended to the sample

    def encode(texts: list[str]) -> torch.Tensor:
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        return text(ids["input_ids"])[0]

    n = len(prompts)
    cond = encode(prompts)
    uncond = encode([""] * n)
    size = unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, unet.config.in_channels - coord, size, size, generator=g)
    if latents:  # same meaning as `atedm generate --latents`: the noise before scaling by init_noise_sigma
        from safetensors.torch import load_file

        x = load_file(latents)["latents"].float().expand(n, -1, -1, -1).clone()
    sched.set_timesteps(steps)
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        xin = sched.scale_model_input(torch.cat([x, x]), t)
        eps = unet(unet_input(xin, coord), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eu, ec = eps.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
    if save_latents:
        from safetensors.torch import save_file

        save_file({"latents": x.contiguous()}, save_latents)
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return img.permute(0, 2, 3, 1).numpy()  # N, H, W, 3


def save_grid(images: np.ndarray, path: str, cols: int, scale: int) -> None:
    from PIL import Image

    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    pad = 2
    grid = np.full((rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad, 3), 96, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        big = im.repeat(scale, 0).repeat(scale, 1)
        y, x = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
        grid[y : y + h * scale, x : x + w * scale] = big
    Image.fromarray(grid).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "shapes"))
    ap.add_argument("--prompt", action="append", help="repeatable; default: a fixed set of 8 prompts")
    ap.add_argument("--n", type=int, default=1, help="images per prompt")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscale of the grid")
    ap.add_argument("--out", default="/tmp/shapes_samples.png")
    ap.add_argument("--latents", help="safetensors with tensor 'latents' [1 or N, 3, S, S] (S the UNet sample_size): start noise (unscaled)")
    ap.add_argument("--save-latents", help="write the final samples (before clamping) as tensor 'latents'")
    args = ap.parse_args()
    prompts = [p for p in (args.prompt or DEFAULT_PROMPTS) for _ in range(args.n)]
    images = sample(args.model, prompts, args.steps, args.guidance, args.seed, args.threads, args.latents,
                    args.save_latents)
    save_grid(images, args.out, cols=max(args.n, 4) if args.n > 1 else 4, scale=args.scale)
    for i, p in enumerate(prompts):
        print(f"{i}: {p}")
    print(f"wrote {len(prompts)} samples to {args.out}")


if __name__ == "__main__":
    main()
