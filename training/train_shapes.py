#!/usr/bin/env python3
"""Train the embedded default model of atedm: a tiny pixel-space text-to-image diffusion model on the synthetic
"shapes" data set (32x32 RGB, captions from the grammar in src/shapes/grammar.ts).

What it builds:
  * a CLIP BPE tokenizer for the caption vocabulary (vocab.json + merges.txt in CLIP's format, every caption word is
    one token `word</w>`, SD-1.5's tokenizer_config.json / special_tokens_map.json, model_max_length 77 or --max-length);
  * a tiny transformers CLIPTextModel (random init, trained jointly with the UNet);
  * a diffusers UNet2DConditionModel shaped like SD-XL in miniature, in pixel space (3 -> 3 channels, 32x32):
    DownBlock2D + CrossAttnDownBlock2D x2 (no attention at 32x32, attention at 16x16 and 8x8), mirrored up blocks,
    UNetMidBlock2DCrossAttn, several transformer layers per attention block, linear projections;
  * DDPM training (v prediction by default, 1000 steps, `linear` betas 1e-4..0.02 as in DDPM's 32x32 models), caption
    dropped to "" 10 % of the time for classifier-free guidance, AdamW + warmup + cosine, EMA of all weights.

The output folder has the standard diffusers layout of a StableDiffusionPipeline without a VAE:
  model_index.json, unet/, text_encoder/, tokenizer/, scheduler/ (EulerDiscreteScheduler config).

See training/README.md for the commands. Python is used only for training; the runtime is TypeScript.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import random
import shutil
import time

# OpenMP threads that spin while waiting make a 2-thread run ~15x slower as soon as another process takes one of the
# two cores (measured: 27 s/step instead of 1.7 at nice 19 beside one busy process); passive waiting costs ~5 % when
# the machine is quiet and keeps ~2.9 s/step under that contention. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# --------------------------------------------------------------------------------------------------------------------
# Caption grammar (mirrors src/shapes/grammar.ts; the data loader checks every caption against the vocabulary).
# --------------------------------------------------------------------------------------------------------------------
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
BACKGROUNDS = ["white", "black", "gray"]
SHAPES = ["circle", "square", "triangle", "cross"]
SIZES = ["small", "large"]
POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
RELATIONS = ["left of", "right of", "above", "below"]
TEMPLATE_WORDS = ["a", "at", "the", "on", "background"]


def caption_words(textures: bool = False) -> list[str]:
    """Every word a caption can contain, in a fixed order (the order fixes the merges and so the token ids).

    `textures` adds the textured-background words of the 64x64 scene set ("striped", "gradient", "noisy";
    src/shapes/grammar.ts TEXTURES; their colors are object colors) last, so every earlier word keeps its token id
    and merges. It is off by default: the embedded models/shapes tokenizer (615 tokens, BOS/EOS 613/614) is what
    resuming or re-exporting its checkpoint must write; with textures BOS/EOS move to 626/627 (628 tokens), which
    only a new model trained on textured scenes may use."""
    words: list[str] = []
    extra = [["striped", "gradient", "noisy"]] if textures else []
    for group in (TEMPLATE_WORDS, SIZES, COLORS, BACKGROUNDS, SHAPES, POSITIONS, RELATIONS, *extra):
        for phrase in group:
            for w in phrase.split():
                if w not in words:
                    words.append(w)
    return words


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer: CLIP byte-level BPE restricted to the caption vocabulary.
# --------------------------------------------------------------------------------------------------------------------
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
TEXT_POSITIONS = 77  # the text encoder's position table (every CLIP text encoder has 77)
# Captions are padded to this many tokens (tokenizer_config.json's model_max_length, which diffusers' pipelines and
# atedm pad to). Set by --max-length; a checkpoint keeps the value it was trained with.
MODEL_MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP reversible byte -> printable character table (same insertion order as CLIP's)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE: repeatedly merge the lowest-ranked adjacent pair (all its occurrences, left to right)."""
    word = list(symbols)
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        out: list[str] = []
        i = 0
        while i < len(word):
            if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                out.append(word[i] + word[i + 1])
                i += 2
            else:
                out.append(word[i])
                i += 1
        word = out
    return word


def build_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab (token -> id) and merges such that each word becomes the single token `word</w>`.

    Merges are added word by word; a new merge always has the highest rank, so it never changes how an earlier word
    (already one token) is split."""
    b2u = bytes_to_unicode()
    alphabet = list(b2u.values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    seen = set(vocab_list)
    for w in words:
        chars = [b2u[b] for b in w.encode("utf-8")]
        symbols = chars[:-1] + [chars[-1] + "</w>"]
        while True:
            cur = _bpe(symbols, ranks)
            if len(cur) == 1:
                break
            pair = (cur[0], cur[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in seen:
                seen.add(pair[0] + pair[1])
                vocab_list.append(pair[0] + pair[1])
    vocab_list += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_tokenizer(out_dir: str, words: list[str] | None = None) -> dict[str, int]:
    """Write vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (SD-1.5 style)."""
    words = words or caption_words()
    vocab, merges = build_bpe(words)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")

    def added(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    special = {"bos_token": added(BOS), "eos_token": added(EOS), "pad_token": EOS, "unk_token": added(EOS)}
    config = {
        "add_prefix_space": False,
        "bos_token": {"__type": "AddedToken", **added(BOS)},
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": {"__type": "AddedToken", **added(EOS)},
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": EOS,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **added(EOS)},
    }
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return vocab


def load_tokenizer(tok_dir: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tok_dir)


def check_tokenizer(tok, words: list[str]) -> None:
    """Every caption word must be exactly one token `word</w>`; the empty prompt is [bos, eos]."""
    bad = []
    for w in words:
        ids = tok(w, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or tok.convert_ids_to_tokens(ids)[0] != w + "</w>":
            bad.append((w, tok.convert_ids_to_tokens(ids)))
    if bad:
        raise SystemExit(f"tokenizer check failed: {bad}")
    empty = tok("", padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True)["input_ids"]
    assert empty[:2] == [tok.bos_token_id, tok.eos_token_id] and len(empty) == MODEL_MAX_LENGTH, empty[:4]


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------
def load_dataset(data_dir: str, textures: bool = False) -> tuple[torch.Tensor, list[str]]:
    from safetensors.torch import load_file

    path = os.path.join(data_dir, "shapes.safetensors")
    cap_path = os.path.join(data_dir, "captions.json")
    if not os.path.exists(path) or not os.path.exists(cap_path):
        raise SystemExit(
            f"no data in {data_dir}: export it first (see training/README.md), e.g.\n"
            f"  node bin/atedm.js export-shapes --out {data_dir} --count 100000 --seed 0"
        )
    images = load_file(path)["images"]
    with open(cap_path, encoding="utf-8") as f:
        captions = json.load(f)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise SystemExit(f"{path}: expected square images U8 [N, S, S, 3], got {images.dtype} {list(images.shape)}")
    if not isinstance(captions, list) or len(captions) != images.shape[0]:
        raise SystemExit(f"{cap_path}: expected a JSON array of {images.shape[0]} captions")
    vocab = set(caption_words(textures))
    for c in set(captions):
        unknown = [w for w in c.split() if w not in vocab]
        if unknown:
            raise SystemExit(f"caption outside the vocabulary: {c!r} (unknown words {unknown})")
    return images, captions


def data_size(data_dir: str) -> int:
    """The side of the data set's square images (32, or 64 for `export-shapes --size 64`), from its header only."""
    from safetensors import safe_open

    path = os.path.join(data_dir, "shapes.safetensors")
    if not os.path.exists(path):
        return 32  # load_dataset says what is missing
    with safe_open(path, "pt") as f:
        return int(f.get_slice("images").get_shape()[1])


def tokenize_all(tok, captions: list[str]) -> torch.Tensor:
    """[N, MODEL_MAX_LENGTH] int64 ids, padded like the diffusers pipelines (padding=max_length, truncation)."""
    uniq = sorted(set(captions))
    longest = max(len(x) for x in tok(uniq)["input_ids"])
    if longest > MODEL_MAX_LENGTH:
        raise SystemExit(f"captions need {longest} tokens, more than --max-length {MODEL_MAX_LENGTH}")
    ids = tok(uniq, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True, return_tensors="pt")["input_ids"]
    row = {c: i for i, c in enumerate(uniq)}
    return ids[torch.tensor([row[c] for c in captions])]


def to_model_range(batch_u8: torch.Tensor) -> torch.Tensor:
    """U8 [B, 32, 32, 3] HWC -> float32 [B, 3, 32, 32] in [-1, 1]."""
    return batch_u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


class Batches:
    """Seeded epoch-wise shuffling; its whole state goes into the checkpoint so a resumed run sees the same order."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0
        self.epoch = 0

    def next(self) -> torch.Tensor:
        out = []
        need = self.batch
        while need > 0:
            if self.pos >= self.n:
                self.perm = torch.randperm(self.n, generator=self.gen)
                self.pos = 0
                self.epoch += 1
            take = min(need, self.n - self.pos)
            out.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            need -= take
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos, self.epoch = s["perm"], s["pos"], s["epoch"]


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------
PRESETS = {
    # UNet block_out_channels, layers_per_block, transformer layers per attention block, heads; text hidden/layers/heads.
    # fp16 export sizes: s 13.0 MB, m 18.0 MB, l 18.7 MB (limit 20 MB).
    "s": dict(channels=[32, 64, 128], layers_per_block=1, transformer_layers=2, heads=4, text_hidden=128, text_layers=3, text_heads=4),
    "m": dict(channels=[32, 64, 160], layers_per_block=1, transformer_layers=2, heads=4, text_hidden=128, text_layers=3, text_heads=4),
    "l": dict(channels=[32, 64, 128], layers_per_block=2, transformer_layers=2, heads=4, text_hidden=128, text_layers=3, text_heads=4),
    # The SD-XL-shaped model of issue 13 (candidate G of docs/sdxl-shapes-design.md, training/configs/sdxl_shapes_unet.json):
    # 64x64 data (export-shapes --size 64), no attention at 64x64, depth 2 at 32x32, depth 10 at 16x16 and in the mid block.
    # Widths and heads are the shapes model's (candidate G) so that --warm-from models/shapes transfers every weight.
    "xl": dict(channels=[32, 64, 128], layers_per_block=1, transformer_layers=[1, 2, 10], heads=[1, 4, 4], text_hidden=128, text_layers=3,
               text_heads=4),
}


def model_config(args, vocab: dict[str, int], size: int = 32) -> dict:
    p = dict(PRESETS[args.preset])
    for k in ("layers_per_block", "transformer_layers", "heads", "text_hidden", "text_layers", "text_heads"):
        v = getattr(args, k)
        if v is not None:
            p[k] = v
    if args.channels:
        p["channels"] = [int(c) for c in args.channels.split(",")]
    unet = dict(
        sample_size=size,
        in_channels=3 + args.coord_channels,
        out_channels=3,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=p["channels"],
        layers_per_block=p["layers_per_block"],
        transformer_layers_per_block=p["transformer_layers"],
        attention_head_dim=p["heads"],  # diffusers' (historical) name for the number of heads
        cross_attention_dim=p["text_hidden"],
        use_linear_projection=True,
        norm_num_groups=args.norm_groups,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
    )
    text = dict(
        vocab_size=len(vocab),
        hidden_size=p["text_hidden"],
        intermediate_size=4 * p["text_hidden"],
        projection_dim=p["text_hidden"],
        num_hidden_layers=p["text_layers"],
        num_attention_heads=p["text_heads"],
        max_position_embeddings=TEXT_POSITIONS,
        hidden_act="quick_gelu",
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    return {"unet": unet, "text_encoder": text}


def coord_channels_of(cfg: dict) -> int:
    """Input channels beyond the image's: 2 when the UNet reads CoordConv coordinate maps (see coord_maps)."""
    return cfg["unet"]["in_channels"] - cfg["unet"]["out_channels"]


def max_length_of(state: dict) -> int:
    """The caption length a checkpoint was trained with (checkpoints from before --max-length used 77)."""
    return state["args"].get("max_length", 77)


def coord_maps(batch: int, size: int = 32) -> torch.Tensor:
    """CoordConv input channels (Liu et al. 2018), appended to the noisy image at every UNet call: channel 0 is the
    column, channel 1 the row, each linspace(-1, 1, size). A convolutional UNet otherwise learns where "top left" is
    only from zero padding, and the shapes model had not after 5000 steps: the centroid of its x0 prediction at
    t = 800 sat in the captioned cell of a 3x3 grid 6 % of the time (chance 11 %). atedm's pipeline appends the same
    maps when the model folder's atedm.json says "coord_channels": 2."""
    lin = torch.linspace(-1.0, 1.0, size)
    maps = torch.stack([lin.view(1, size).expand(size, size), lin.view(size, 1).expand(size, size)])
    return maps.unsqueeze(0).expand(batch, 2, size, size).contiguous()


def unet_input(x: torch.Tensor, coord: int) -> torch.Tensor:
    if not coord:
        return x
    return torch.cat([x, coord_maps(x.shape[0], x.shape[-1]).to(device=x.device, dtype=x.dtype)], 1)


def build_models(cfg: dict):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(**cfg["unet"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    return unet, text


def count_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Noise schedule: DDPM's linear betas for 32x32 pixel models. Terminal SNR ~4e-5 (the image mean does not leak into
# x_T, unlike scaled_linear's 0.0047 that biases pixel-space samples toward a gray background). The prediction type
# is set by --prediction-type (default v_prediction): with epsilon prediction the x0 implied at t = 999 is
# x_t - 157 eps, so an eps error of 0.045 RMS (MSE 0.002, what this model reached) is an x0 error of ~7, and Euler
# samples left the [-1, 1] range; v = sqrt(ab) eps - sqrt(1 - ab) x0 is ~ -x0 there, well conditioned at every t.
DEFAULT_GUIDANCE = 4.0
DEFAULT_STEPS = 20  # the step count the models are evaluated at (atedm eval-alignment's default)
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02, prediction_type="v_prediction")


def scheduler_config() -> dict:
    return dict(
        SCHEDULE,
        timestep_spacing="trailing",
        steps_offset=0,
        interpolation_type="linear",
        use_karras_sigmas=False,
    )


def alphas_cumprod() -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULE).alphas_cumprod.to(torch.float32)


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------
def lr_at(step: int, trained_s: float, args) -> float:
    """Linear warmup, then cosine down to min_lr_frac * lr. With --max-minutes the cosine follows whichever budget is
    further along (steps or training time), so a run cut short by the time budget still ends annealed."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.lr_schedule == "constant":
        return args.lr
    prog = (step - args.warmup) / max(1, args.steps - args.warmup)
    if args.max_minutes:
        prog = max(prog, trained_s / (args.max_minutes * 60))
    prog = min(1.0, prog)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))


def sample_timesteps(n: int, gen: torch.Generator, args) -> torch.Tensor:
    """Training timesteps: uniform on [0, T), except that a fraction --t-high-frac of the batch is drawn uniformly
    from [--t-high-min, T). Where an object goes, and its colour and shape, are decided at high noise (x0 predictions
    at t >= 600 were still blank or blobby when the low-noise ones were clean), so this spends more of the gradient
    there. Per-t weighting leaves each timestep's optimum (the conditional mean) unchanged."""
    num = SCHEDULE["num_train_timesteps"]
    dev = gen.device
    t = torch.randint(0, num, (n,), generator=gen, device=dev)
    if args.t_high_frac > 0:
        high = torch.randint(args.t_high_min, num, (n,), generator=gen, device=dev)
        pick = torch.rand(n, generator=gen, device=dev) < args.t_high_frac
        t = torch.where(pick, high, t)
    return t


def list_checkpoints(ckpt_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(ckpt_dir, "ckpt-*.pt")))


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def atomic_save(obj, path: str) -> None:
    """torch.save through a temporary file, so a reader (or a killed run) never sees half a file."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: str, state: dict, keep: int) -> None:
    atomic_save(state, path)
    for old in list_checkpoints(os.path.dirname(path))[:-keep]:
        os.remove(old)


def named_trainables(unet, text) -> list[tuple[str, torch.nn.Parameter]]:
    return [("unet." + n, p) for n, p in unet.named_parameters()] + [("text_encoder." + n, p) for n, p in text.named_parameters()]


def load_ema_weights(unet, text, state: dict, what: str) -> None:
    """Copy a checkpoint's EMA weights into the models (the names must match, in order). A checkpoint without
    coordinate channels initialises a model with them: conv_in's extra input channels start at zero, so the model
    starts out computing exactly what the checkpoint did."""
    named = named_trainables(unet, text)
    if [nm for nm, _ in named] != state["ema_names"]:
        raise SystemExit(f"{what}: EMA parameter names do not match the model")
    with torch.no_grad():
        for (nm, p), e in zip(named, state["ema"]):
            if nm == "unet.conv_in.weight" and p.shape != e.shape and p.shape[1] > e.shape[1] and p.shape[2:] == e.shape[2:]:
                p.zero_()
                p[:, : e.shape[1]].copy_(e)
            else:
                p.copy_(e)


def warm_start(unet, text, folder: str, vocab: dict[str, int]) -> None:
    """Initialise a fresh model from an exported model folder (e.g. models/shapes for the SD-XL-shaped model).

    Every tensor whose name and shape match is copied. Token embeddings are copied by token string (the texture
    words add tokens and move BOS/EOS; new tokens keep their random rows). Transformer blocks the folder lacks
    (depth 10 where the shapes model has 2) start as identities: their residual outputs (attn1/attn2 out
    projections, the feed-forward's last Linear) are zeroed, so at init the deeper model computes what the folder's
    model computes, and training grows the new blocks from there (as ReZero / ControlNet's zero convolutions)."""
    from safetensors.torch import load_file

    unet_sd = load_file(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    text_sd = {k.removeprefix("text_model."): v for k, v in load_file(os.path.join(folder, "text_encoder", "model.safetensors")).items()}
    with open(os.path.join(folder, "tokenizer", "vocab.json"), encoding="utf-8") as f:
        old_vocab = json.load(f)
    counts = {"copied": 0, "fresh": 0, "identity blocks": 0}
    with torch.no_grad():
        for name, p in unet.named_parameters():
            src = unet_sd.get(name)
            if src is not None and src.shape == p.shape:
                p.copy_(src.float())
                counts["copied"] += p.numel()
            else:
                counts["fresh"] += p.numel()
        for name, m in unet.named_modules():
            if type(m).__name__ == "BasicTransformerBlock" and name + ".attn1.to_q.weight" not in unet_sd:
                for lin in (m.attn1.to_out[0], m.attn2.to_out[0], m.ff.net[2]):
                    lin.weight.zero_()
                    lin.bias.zero_()
                counts["identity blocks"] += 1
        emb_name = "embeddings.token_embedding.weight"
        for full_name, p in text.named_parameters():
            name = full_name.removeprefix("text_model.")
            src = text_sd.get(name)
            if name == emb_name:
                for tok, i in vocab.items():
                    if tok in old_vocab:
                        p[i].copy_(src[old_vocab[tok]].float())
                counts["copied"] += p.shape[1] * sum(tok in old_vocab for tok in vocab)
            elif src is not None and src.shape == p.shape:
                p.copy_(src.float())
                counts["copied"] += p.numel()
            else:
                counts["fresh"] += p.numel()
    print(f"warm start from {folder}: {counts['copied'] / 1e6:.2f} M values copied, {counts['fresh'] / 1e6:.2f} M fresh, "
          f"{counts['identity blocks']} new transformer blocks start as identities", flush=True)


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    os.makedirs(args.ckpt_dir, exist_ok=True)

    ckpts = list_checkpoints(args.ckpt_dir) if (args.resume or args.export_only) else []
    ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=False) if ckpts else None
    global MODEL_MAX_LENGTH
    MODEL_MAX_LENGTH = max_length_of(ckpt) if ckpt else args.max_length
    if not 2 <= MODEL_MAX_LENGTH <= TEXT_POSITIONS:
        raise SystemExit(f"--max-length must be in [2, {TEXT_POSITIONS}], got {MODEL_MAX_LENGTH}")

    tok_dir = os.path.join(args.ckpt_dir, "tokenizer")
    # The texture words (64x64 textured scenes) change the token ids: a checkpoint keeps the vocabulary it began with.
    textures = bool(ckpt["args"].get("textures", False)) if ckpt else args.textures
    vocab = write_tokenizer(tok_dir, caption_words(textures))
    tok = load_tokenizer(tok_dir)
    check_tokenizer(tok, caption_words(textures))
    if ckpt is not None:
        # Checkpoints written before --prediction-type existed were epsilon runs.
        SCHEDULE["prediction_type"] = ckpt["args"].get("prediction_type", "epsilon")
        if SCHEDULE["prediction_type"] != args.prediction_type:
            print(f"note: the checkpoint was trained with prediction_type {SCHEDULE['prediction_type']}; keeping it", flush=True)
    else:
        SCHEDULE["prediction_type"] = args.prediction_type
    if args.export_only:
        if ckpt is None:
            raise SystemExit(f"--export-only: no checkpoint in {args.ckpt_dir}")
        print(f"exporting {ckpts[-1]} (step {ckpt['step']})", flush=True)
        export(ckpt, tok_dir, args.out, args.export_dtype)
        return
    if args.resume and ckpt is None:
        print(f"--resume: no checkpoint in {args.ckpt_dir}, starting fresh", flush=True)

    size = ckpt["model_config"]["unet"]["sample_size"] if ckpt else data_size(args.data)
    cfg = ckpt["model_config"] if ckpt else model_config(args, vocab, size)
    if ckpt and ckpt["model_config"] != model_config(args, vocab, size):
        print("note: resuming with the checkpoint's model config (command-line model flags ignored)", flush=True)
    if ckpt is not None and ckpt.get("light"):
        raise SystemExit(f"{ckpts[-1]} holds only EMA weights (a --weights-out file): it can be exported or used with "
                         "--init-from, not resumed")
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: PyTorch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest convolutions once
        print(f"device: {torch.cuda.get_device_name(dev)}", flush=True)
    unet, text = build_models(cfg)
    unet.to(dev)
    text.to(dev)
    n_unet, n_text = count_params(unet), count_params(text)
    print(
        f"UNet {n_unet / 1e6:.3f} M params, text encoder {n_text / 1e6:.3f} M params, "
        f"fp16 export ~{(n_unet + n_text) * 2 / 1e6:.1f} MB",
        flush=True,
    )

    images, captions = load_dataset(args.data, textures)
    if images.shape[1] != cfg["unet"]["sample_size"]:
        raise SystemExit(f"{args.data}: {images.shape[1]}x{images.shape[1]} images, the model's sample_size is {cfg['unet']['sample_size']}")
    ids = tokenize_all(tok, captions)
    # --omit-size-frac: the same captions without their size word (one-object captions only; two-object captions
    # name no size). The rows of two-object captions are left as they are and never picked.
    if args.omit_size_frac > 0:
        one_object = torch.tensor([c.split()[1] in SIZES for c in captions])
        ids_no_size = tokenize_all(tok, [" ".join(w for i, w in enumerate(c.split()) if not (i == 1 and w in SIZES)) for c in captions])
    empty_ids = tok("", padding="max_length", max_length=MODEL_MAX_LENGTH, return_tensors="pt")["input_ids"][0]
    n = images.shape[0]
    print(f"data: {n} images from {args.data}, {len(set(captions))} distinct captions", flush=True)
    # The whole data set lives on the training device (300 MB as uint8): a batch is one gather, no loader needed.
    images, ids, empty_ids = images.to(dev), ids.to(dev), empty_ids.to(dev)
    if args.omit_size_frac > 0:
        ids_no_size, one_object = ids_no_size.to(dev), one_object.to(dev)

    params = [p for _, p in named_trainables(unet, text)]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    ema = [p.detach().clone() for p in params]
    batches = Batches(n, args.batch, args.seed)
    noise_gen = torch.Generator(device=dev).manual_seed(args.seed + 1)
    step, ema_loss, trained_s = 0, None, 0.0

    if ckpt is None and args.init_from:
        # Start from another run's EMA weights (e.g. an epsilon run fine-tuned into v_prediction): weights only; the
        # optimizer, step count, data order and EMA ramp start fresh.
        init = torch.load(args.init_from, map_location="cpu", weights_only=False)
        load_ema_weights(unet, text, init, f"--init-from {args.init_from}")
        print(f"initialised from the EMA weights of {args.init_from} (step {init['step']})", flush=True)
    if ckpt is None and args.warm_from:
        warm_start(unet, text, args.warm_from, vocab)
    if ckpt is None and (args.init_from or args.warm_from):
        with torch.no_grad():
            for p, e in zip(params, ema):
                e.copy_(p)
    if ckpt:
        unet.load_state_dict(ckpt["unet"])
        text.load_state_dict(ckpt["text_encoder"])
        opt.load_state_dict(ckpt["optimizer"])
        for e, v in zip(ema, ckpt["ema"]):
            e.copy_(v)
        batches.load_state_dict(ckpt["batches"])
        if ckpt["args"].get("device", "cpu") == args.device:
            noise_gen.set_state(ckpt["noise_gen"])
        else:
            print(f"note: the checkpoint was trained on {ckpt['args'].get('device', 'cpu')}; noise reseeded", flush=True)
        set_rng_state(ckpt["rng"])
        step, ema_loss, trained_s = ckpt["step"], ckpt["ema_loss"], ckpt["trained_s"]
        print(f"resumed from {ckpts[-1]} at step {step} ({trained_s / 60:.1f} min trained)", flush=True)

    ab = alphas_cumprod()
    snr = ab / (1 - ab)
    # Min-SNR-gamma loss weighting (Hang et al. 2023): w = min(snr, gamma) / snr on eps, / (snr + 1) on v.
    v_pred = SCHEDULE["prediction_type"] == "v_prediction"
    if args.snr_gamma > 0:
        weight_t = torch.clamp(snr, max=args.snr_gamma) / (snr + 1 if v_pred else snr)
    else:
        weight_t = torch.ones_like(snr)
    sqrt_ab, sqrt_1mab = ab.sqrt().to(dev), (1 - ab).sqrt().to(dev)
    weight_t = weight_t.to(dev)
    coord = coord_channels_of(cfg)

    if args.bf16:
        print("autocast bfloat16 on", flush=True)
    log_path = os.path.join(args.ckpt_dir, "log.csv")
    new_log = not os.path.exists(log_path) or step == 0
    log_f = open(log_path, "w" if new_log else "a", newline="")
    log = csv.writer(log_f)
    if new_log:
        log.writerow(["step", "loss", "ema_loss", "s_per_step", "lr", "trained_min"])

    def make_state() -> dict:
        return {
            "step": step,
            "unet": unet.state_dict(),
            "text_encoder": text.state_dict(),
            "optimizer": opt.state_dict(),
            "ema": [e.clone() for e in ema],
            "ema_names": [nm for nm, _ in named_trainables(unet, text)],
            "batches": batches.state_dict(),
            "noise_gen": noise_gen.get_state(),
            "rng": rng_state(),
            "ema_loss": ema_loss,
            "trained_s": trained_s,
            "model_config": cfg,
            "args": vars(args),
        }

    stop_signal: list[int] = []

    def on_signal(signum, _frame):
        stop_signal.append(signum)

    import signal

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    unet.train()
    text.train()
    last_ckpt = time.time()
    interval_loss, interval_n, interval_t0 = 0.0, 0, time.time()
    bench_times: list[float] = []
    # Losses stay on the device until the next log line (a .item() per step would stall a GPU every step).
    pending: list[torch.Tensor] = []

    def take_pending() -> None:
        nonlocal ema_loss, interval_loss
        if not pending:
            return
        for lv in torch.stack(pending).float().tolist():
            if not math.isfinite(lv):
                raise SystemExit(f"loss is {lv} at or before step {step}; lower --lr")
            ema_loss = lv if ema_loss is None else 0.98 * ema_loss + 0.02 * lv
            interval_loss += lv
        pending.clear()

    def save_weights(state: dict) -> None:
        """--weights-out: the EMA weights alone, in float16 (what the export keeps), ~13 MB instead of ~106 MB."""
        if not args.weights_out:
            return
        light = {k: v for k, v in state.items() if k not in ("unet", "text_encoder", "optimizer", "batches")}
        light["ema"] = [e.detach().to("cpu", torch.float16) for e in state["ema"]]
        light["light"] = True
        os.makedirs(os.path.dirname(os.path.abspath(args.weights_out)), exist_ok=True)
        atomic_save(light, args.weights_out)
    stop_reason = "steps"
    while step < args.steps:
        if stop_signal:
            stop_reason = "signal"
            break
        if args.max_minutes and trained_s / 60 >= args.max_minutes:
            stop_reason = "max-minutes"
            break
        t0 = time.time()
        lr = lr_at(step, trained_s, args)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = batches.next().to(dev)
        x0 = to_model_range(images[idx])
        tok_ids = ids[idx].clone()
        if args.omit_size_frac > 0:
            omit = (torch.rand(len(idx), generator=noise_gen, device=dev) < args.omit_size_frac) & one_object[idx]
            tok_ids[omit] = ids_no_size[idx][omit]
        drop = torch.rand(len(idx), generator=noise_gen, device=dev) < args.cfg_drop
        tok_ids[drop] = empty_ids
        t = sample_timesteps(len(idx), noise_gen, args)
        noise = torch.randn(x0.shape, generator=noise_gen, device=dev)
        xt = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1mab[t].view(-1, 1, 1, 1) * noise
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            cond = text(tok_ids)[0]
            pred = unet(unet_input(xt, coord), t, encoder_hidden_states=cond).sample
        target = sqrt_ab[t].view(-1, 1, 1, 1) * noise - sqrt_1mab[t].view(-1, 1, 1, 1) * x0 if v_pred else noise
        per = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per * weight_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        d = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
        step += 1
        pending.append(loss.detach())
        dt = time.time() - t0
        trained_s += dt
        bench_times.append(dt)
        interval_n += 1
        if step % args.log_every == 0 or step == args.steps:
            take_pending()
            sps = (time.time() - interval_t0) / interval_n
            row = [step, f"{interval_loss / interval_n:.5f}", f"{ema_loss:.5f}", f"{sps:.3f}", f"{lr:.3e}", f"{trained_s / 60:.2f}"]
            log.writerow(row)
            log_f.flush()
            left = (args.steps - step) * sps / 60
            print(
                f"step {step}/{args.steps} loss {interval_loss / interval_n:.4f} ema {ema_loss:.4f} "
                f"{sps:.2f} s/step lr {lr:.2e} trained {trained_s / 60:.1f} min, ~{left:.0f} min left",
                flush=True,
            )
            interval_loss, interval_n, interval_t0 = 0.0, 0, time.time()
        if (args.weights_out or not args.no_checkpoints) and time.time() - last_ckpt >= args.ckpt_minutes * 60:
            take_pending()
            state = make_state()
            if not args.no_checkpoints:
                save_checkpoint(os.path.join(args.ckpt_dir, f"ckpt-{step:07d}.pt"), state, args.keep)
            save_weights(state)
            last_ckpt = time.time()
            print(f"checkpoint at step {step}", flush=True)
    take_pending()
    log_f.close()

    if args.bench:
        skip = min(3, len(bench_times) - 1)
        times = bench_times[skip:]
        result = {
            "preset": args.preset,
            "unet_params": n_unet,
            "text_params": n_text,
            "batch": args.batch,
            "bf16": args.bf16,
            "threads": args.threads,
            "steps_timed": len(times),
            "s_per_step_mean": round(sum(times) / len(times), 4),
            "s_per_step_median": round(sorted(times)[len(times) // 2], 4),
            "unet_config": cfg["unet"],
        }
        print("BENCH " + json.dumps(result), flush=True)
        return

    state = make_state()
    save_weights(state)
    if not args.no_checkpoints:
        save_checkpoint(os.path.join(args.ckpt_dir, f"ckpt-{step:07d}.pt"), state, args.keep)
    if stop_reason == "signal":
        print(f"interrupted at step {step}: checkpoint saved, continue with --resume", flush=True)
        return
    print(f"stopped ({stop_reason}) at step {step}, {trained_s / 60:.1f} min trained, EMA loss {ema_loss:.4f}", flush=True)
    summary = {
        "step": step,
        "stop_reason": stop_reason,
        "trained_min": round(trained_s / 60, 2),
        "ema_loss": ema_loss,
        "unet_params": n_unet,
        "text_params": n_text,
        "data": os.path.abspath(args.data),
        "n_images": n,
    }
    with open(os.path.join(args.ckpt_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if not args.no_export:
        export(state, tok_dir, args.out, args.export_dtype)


# --------------------------------------------------------------------------------------------------------------------
# Export (standard diffusers layout, EMA weights)
# --------------------------------------------------------------------------------------------------------------------
def export(state: dict, tok_dir: str, out: str, export_dtype: str = "fp16") -> None:
    import diffusers
    from diffusers import EulerDiscreteScheduler

    unet, text = build_models(state["model_config"])
    load_ema_weights(unet, text, state, "checkpoint")
    unet.eval()
    text.eval()
    dtype = torch.float16 if export_dtype == "fp16" else torch.float32

    tmp = out.rstrip("/") + ".tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    unet.to(dtype).save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
    text.to(dtype).save_pretrained(os.path.join(tmp, "text_encoder"), safe_serialization=True)
    prefix_text_encoder_keys(os.path.join(tmp, "text_encoder", "model.safetensors"))
    shutil.copytree(tok_dir, os.path.join(tmp, "tokenizer"))
    EulerDiscreteScheduler(**scheduler_config()).save_pretrained(os.path.join(tmp, "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": [None, None],
    }
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    with open(os.path.join(tmp, "atedm.json"), "w") as f:
        json.dump(atedm_defaults(coord_channels_of(state["model_config"])), f, indent=1)
        f.write("\n")
    verify_export(tmp, unet, text)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    os.replace(tmp, out)
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "**", "*"), recursive=True) if os.path.isfile(p))
    print(f"exported step {state['step']} (EMA weights, {str(dtype).replace('torch.', '')}) to {out}: {total / 1e6:.2f} MB", flush=True)


def atedm_defaults(coord: int) -> dict:
    """The model folder's atedm.json: generation defaults for atedm (diffusers ignores the file)."""
    d: dict = {"guidance": DEFAULT_GUIDANCE, "steps": DEFAULT_STEPS}
    if coord:
        d["coord_channels"] = coord
    d["_comment"] = ("generation defaults for atedm; diffusers ignores this file. Pixel-space sampling oversaturates at "
                     "guidance 7.5." + (" coord_channels: the UNet input is the sample plus column and row maps, each "
                                        "linspace(-1, 1) (CoordConv)." if coord else ""))
    return d


def prefix_text_encoder_keys(path: str) -> None:
    """transformers 5 saves CLIPTextModel weights as `embeddings.*`, `encoder.*`, `final_layer_norm.*`; every SD
    checkpoint (and transformers 4, and the TS loader) uses `text_model.embeddings.*` etc. transformers 5 loads both,
    so write the classic names."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        tensors = {k if k.startswith("text_model.") else "text_model." + k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, path, metadata={**meta, "format": "pt"})


def verify_export(folder: str, unet, text) -> None:
    """Reload with the plain diffusers/transformers loaders and compare against the in-memory models."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    u2 = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), torch_dtype=torch.float32).eval()
    t2 = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), torch_dtype=torch.float32).eval()
    tok = load_tokenizer(os.path.join(folder, "tokenizer"))
    check_tokenizer(tok, caption_words(textures="striped</w>" in tok.get_vocab()))
    g = torch.Generator().manual_seed(0)
    ids = tok(["a small red circle at the top left on a white background"], padding="max_length",
              max_length=MODEL_MAX_LENGTH, return_tensors="pt")["input_ids"]
    side = u2.config.sample_size
    x = unet_input(torch.randn(1, 3, side, side, generator=g), u2.config.in_channels - u2.config.out_channels)
    with torch.inference_mode():
        ref_c = text.float()(ids)[0]
        ref = unet.float()(x, torch.tensor([500]), encoder_hidden_states=ref_c).sample
        c = t2(ids)[0]
        y = u2(x, torch.tensor([500]), encoder_hidden_states=c).sample
    err_text = (c - ref_c).abs().max().item()
    if not err_text < 1e-3:
        raise SystemExit(f"export check failed: reloaded text encoder output differs by {err_text}")
    err = (y - ref).abs().max().item()
    if not err < 1e-3:
        raise SystemExit(f"export check failed: reloaded UNet output differs by {err}")


# --------------------------------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(HERE, "data"), help="folder with shapes.safetensors + captions.json")
    ap.add_argument("--out", default=os.path.join(REPO, "models", "shapes"), help="exported diffusers folder")
    ap.add_argument("--ckpt-dir", default=os.path.join(HERE, "checkpoints"))
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --ckpt-dir (if any)")
    ap.add_argument("--export-only", action="store_true", help="export the latest checkpoint's EMA weights and exit")
    ap.add_argument("--steps", type=int, default=4000, help="total optimizer steps (the cosine schedule ends here)")
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="training-time budget in minutes, summed over resumed runs: stop (checkpoint + export) when "
                         "it is spent; the cosine schedule ends by then too")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine")
    ap.add_argument("--min-lr-frac", type=float, default=0.05, help="cosine floor as a fraction of --lr")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="v_prediction",
                    help="what the UNet predicts (a resumed run keeps its checkpoint's)")
    ap.add_argument("--init-from", help="checkpoint whose EMA weights initialise a fresh run (no optimizer state)")
    ap.add_argument("--warm-from", help="exported model folder (e.g. models/shapes) whose matching weights initialise a fresh "
                    "run; transformer blocks it lacks start as identities (see warm_start)")
    ap.add_argument("--snr-gamma", type=float, default=0.0,
                    help="Min-SNR-gamma loss weighting; 0 (default) = plain MSE on the prediction target")
    ap.add_argument("--t-high-frac", type=float, default=0.0,
                    help="fraction of each batch whose timestep is drawn from [--t-high-min, 1000) (default 0: uniform)")
    ap.add_argument("--t-high-min", type=int, default=500)
    ap.add_argument("--max-length", type=int, default=77,
                    help="tokens every caption is padded to (the tokenizer's model_max_length). With 77, 60+ padding "
                         "tokens that all carry the same sentence summary took most of the cross-attention; the "
                         "grammar's longest caption is 14 tokens")
    ap.add_argument("--coord-channels", type=int, choices=[0, 2], default=0,
                    help="2: the UNet also reads column/row coordinate maps (CoordConv); with --init-from a model "
                         "without them, conv_in's new input channels start at zero")
    ap.add_argument("--omit-size-frac", type=float, default=0.0,
                    help="probability of training a one-object image on its caption without the size word, so that "
                         "'a red circle at the top left on a white background' means one object of either size "
                         "(without it, 'a red circle ...' reads as the start of a two-object caption)")
    ap.add_argument("--cfg-drop", type=float, default=0.1, help="probability of training on the empty caption")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on GPUs and on CPUs with AVX512-BF16)")
    ap.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (default cpu)")
    ap.add_argument("--weights-out", help="also write the EMA weights alone (float16, ~13 MB) to this file at every "
                                          "checkpoint interval and at the end; exportable, usable with --init-from")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="s")
    ap.add_argument("--textures", action="store_true",
                    help="vocabulary with the textured-background words (striped, gradient, noisy): for data exported with "
                         "export-shapes --textures (the SD-XL-shaped model, preset xl); a resumed run keeps its checkpoint's")
    ap.add_argument("--channels", help="UNet block_out_channels, e.g. 32,64,128 (overrides the preset)")
    ap.add_argument("--layers-per-block", type=int)
    ap.add_argument("--transformer-layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--norm-groups", type=int, default=16)
    ap.add_argument("--text-hidden", type=int)
    ap.add_argument("--text-layers", type=int)
    ap.add_argument("--text-heads", type=int)
    ap.add_argument("--export-dtype", choices=["fp16", "fp32"], default="fp16")
    ap.add_argument("--ckpt-minutes", type=float, default=10)
    ap.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--no-checkpoints", action="store_true")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--bench", action="store_true", help="time --steps steps, print a BENCH json line, write nothing else")
    args = ap.parse_args(argv)
    if args.bench:
        args.no_checkpoints = True
        args.no_export = True
    train(args)


if __name__ == "__main__":
    main()
