#!/usr/bin/env python3
"""PyTorch reference timing of one UNet call (the baseline `npm run bench:unet` compares against).

Builds a diffusers UNet2DConditionModel from the SD-1.5 or SD-XL UNet config (inline below) or from a config.json,
with random seeded weights, in float32, batch 1 (no classifier-free guidance), and times one forward call under
torch.inference_mode: one warmup call, then the median of --runs calls.

  python training/bench_torch_unet.py --config sd15 --height 512 --width 512 --runs 2 --threads 2 --json
  python training/bench_torch_unet.py --config models/shapes/unet/config.json --height 32 --width 32 --json

With --json the result is one JSON line on stdout: {config, height, width, threads, median_s, runs_s, torch_version,
...}; progress goes to stderr. --dump-weights FILE.safetensors saves the random state_dict (diffusers names, float32)
and --dump-io FILE.safetensors the inputs and output of the warmup call, so another implementation can load the
identical weights and compare.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SDXL_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_config(name: str) -> tuple[dict, int]:
    """(unet config, image-to-sample downscale factor: 8 with a VAE, 1 for a pixel-space model)."""
    if name == "sd15":
        return dict(SD15_UNET), 8
    if name == "sdxl":
        return dict(SDXL_UNET), 8
    path = os.path.join(name, "config.json") if os.path.isdir(name) else name
    with open(path) as f:
        cfg = json.load(f)
    scale = 8
    index = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "model_index.json")
    if os.path.exists(index):
        with open(index) as f:
            vae = json.load(f).get("vae", [None, None])
        if not vae or vae[0] is None:
            scale = 1
    return cfg, scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="sd15", help="sd15 | sdxl | path to a UNet config.json (or its folder)")
    ap.add_argument("--height", type=int, default=512, help="image height in pixels")
    ap.add_argument("--width", type=int, default=512, help="image width in pixels")
    ap.add_argument("--runs", type=int, default=3, help="timed calls after one warmup call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timestep", type=float, default=500)
    ap.add_argument("--scale", type=int, help="image/sample size ratio (default 8; 1 for a config whose model has no VAE)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    ap.add_argument("--dump-weights", metavar="FILE.safetensors", help="save the random weights")
    ap.add_argument("--dump-io", metavar="FILE.safetensors", help="save inputs and output of the warmup call")
    args = ap.parse_args()

    import diffusers
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(args.threads)
    cfg, scale = load_config(args.config)
    scale = args.scale or scale
    if args.height % scale or args.width % scale:
        raise SystemExit(f"--height/--width must be multiples of {scale}")
    h, w = args.height // scale, args.width // scale

    torch.manual_seed(args.seed)
    t0 = time.time()
    init = {k: v for k, v in cfg.items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(init).eval()
    n_params = sum(p.numel() for p in unet.parameters())
    log(f"built {args.config} UNet ({n_params / 1e6:.1f} M params) in {time.time() - t0:.1f} s")

    c = unet.config
    g = torch.Generator().manual_seed(args.seed + 1)
    sample = torch.randn(1, c.in_channels, h, w, generator=g)
    timestep = torch.tensor([args.timestep], dtype=torch.float32)
    ctx = torch.randn(1, 77, c.cross_attention_dim, generator=g)
    kwargs = {}
    inputs = {"sample": sample, "timestep": timestep, "encoder_hidden_states": ctx}
    if c.addition_embed_type == "text_time":
        n_time = 6
        text_dim = c.projection_class_embeddings_input_dim - n_time * c.addition_time_embed_dim
        text_embeds = torch.randn(1, text_dim, generator=g)
        time_ids = torch.tensor([[args.height, args.width, 0, 0, args.height, args.width]], dtype=torch.float32)
        kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        inputs.update(text_embeds=text_embeds, time_ids=time_ids)
    elif c.addition_embed_type is not None:
        raise SystemExit(f"addition_embed_type {c.addition_embed_type!r} is not supported here")

    if args.dump_weights:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, args.dump_weights,
                  metadata={"config": json.dumps(init), "seed": str(args.seed)})
        log(f"wrote weights to {args.dump_weights}")

    def call() -> torch.Tensor:
        return unet(sample, timestep, encoder_hidden_states=ctx, **kwargs).sample

    with torch.inference_mode():
        t0 = time.time()
        out = call()
        warmup_s = time.time() - t0
        log(f"warmup call {warmup_s:.2f} s, output {list(out.shape)} finite={bool(torch.isfinite(out).all())}")
        if args.dump_io:
            from safetensors.torch import save_file

            save_file({**{k: v.contiguous() for k, v in inputs.items()}, "out": out.contiguous()}, args.dump_io)
            log(f"wrote inputs/output to {args.dump_io}")
        runs = []
        for i in range(args.runs):
            t0 = time.time()
            call()
            runs.append(time.time() - t0)
            log(f"run {i + 1}/{args.runs}: {runs[-1]:.2f} s")

    result = {
        "config": args.config,
        "height": args.height,
        "width": args.width,
        "threads": args.threads,
        "median_s": round(statistics.median(runs), 4) if runs else None,
        "runs_s": [round(r, 4) for r in runs],
        "warmup_s": round(warmup_s, 4),
        "params": n_params,
        "sample_shape": list(sample.shape),
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"{args.config} {args.height}x{args.width} threads={args.threads}: median {result['median_s']} s "
              f"over {len(runs)} runs {result['runs_s']} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
