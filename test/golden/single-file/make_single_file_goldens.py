"""Goldens for atedm's single-file checkpoint conversion (src/io/single_file*.ts), made by diffusers itself.

Run from the repository root (diffusers commit 58eb52c, the fixtures' commit; torch CPU, transformers, safetensors):

    PYTHONPATH=/work/diffusers-src/src python3 test/golden/single-file/make_single_file_goldens.py \
        --diffusers /work/diffusers-src --fixtures /work/shared/fixtures

(a) folder -> single file: diffusers' own scripts, run as they are (subprocess, full precision, --use_safetensors):
    scripts/convert_diffusers_to_original_stable_diffusion.py for tiny-sd,
    scripts/convert_diffusers_to_original_sdxl.py for tiny-sdxl.
(b) single file -> folder: StableDiffusionPipeline / StableDiffusionXLPipeline.from_single_file(file,
    config=<fixture folder>, local_files_only=True), state dicts of unet, vae, text_encoder(_2).

The single files (13 MB) are written to a temp dir and not kept. manifest.json records, per fixture:
  single[key]     = [shape, dtype, sha256(bytes)[:HASH]]  every tensor of the script's single file
  components[c][key] = [shape, sha256(float32 bytes)[:HASH]]  every tensor of from_single_file's component c
Text-encoder keys are written in the saved (save_pretrained) layout, `text_model.*`, as the fixtures' files are.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open

HASH = 24  # hex digits of sha256 kept (96 bits): enough to tell any two tensors apart, keeps the file small

SCRIPTS = {
    "tiny-sd": "convert_diffusers_to_original_stable_diffusion.py",
    "tiny-sdxl": "convert_diffusers_to_original_sdxl.py",
}


def digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:HASH]


def single_manifest(path):
    out = {}
    with safe_open(path, "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            dtype = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}[t.dtype]
            out[k] = [list(t.shape), dtype, digest(t.contiguous().numpy().tobytes())]
    return out


def component_manifest(module, text_encoder=False):
    out = {}
    for k, v in module.state_dict().items():
        # transformers >= 5.6 flattens CLIPTextModel (no `text_model.` in its state dict); its saved files and the
        # fixtures keep `text_model.*`, the names atedm's loaders read.
        if text_encoder and not k.startswith("text_model.") and not k.startswith("text_projection"):
            k = "text_model." + k
        if k.endswith("position_ids"):
            continue  # a buffer, not a weight; neither transformers' saved files nor atedm have it
        out[k] = [list(v.shape), digest(v.detach().to(torch.float32).contiguous().numpy().tobytes())]
    return dict(sorted(out.items()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffusers", default="/work/diffusers-src")
    ap.add_argument("--fixtures", default="/work/shared/fixtures")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    import diffusers
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    manifest = {
        "produced_by": {
            "diffusers": diffusers.__version__,
            "diffusers_src": args.diffusers,
            "torch": torch.__version__,
            "script": "test/golden/single-file/make_single_file_goldens.py",
            "hash": f"sha256, first {HASH} hex digits",
        },
        "fixtures": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, script in SCRIPTS.items():
            folder = os.path.join(args.fixtures, name)
            single = os.path.join(tmp, f"{name}.safetensors")
            cmd = [sys.executable, os.path.join(args.diffusers, "scripts", script), "--model_path", folder,
                   "--checkpoint_path", single, "--use_safetensors"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            cls = StableDiffusionXLPipeline if name == "tiny-sdxl" else StableDiffusionPipeline
            pipe = cls.from_single_file(single, config=folder, local_files_only=True, torch_dtype=torch.float32)
            comps = {"unet": component_manifest(pipe.unet), "vae": component_manifest(pipe.vae),
                     "text_encoder": component_manifest(pipe.text_encoder, True)}
            if name == "tiny-sdxl":
                comps["text_encoder_2"] = component_manifest(pipe.text_encoder_2, True)
            manifest["fixtures"][name] = {
                "script": f"scripts/{script} --use_safetensors (float32)",
                "from_single_file": f"{cls.__name__}.from_single_file(file, config=<fixture folder>)",
                "single": single_manifest(single),
                "components": comps,
            }
    with open(args.out, "w") as f:
        json.dump(manifest, f, indent=0, separators=(",", ":"))
        f.write("\n")
    for name, m in manifest["fixtures"].items():
        print(name, "single keys", len(m["single"]), {c: len(v) for c, v in m["components"].items()})


if __name__ == "__main__":
    main()
