"""Golden tensors for atedm's extra schedulers, produced by the REAL diffusers scheduler classes.

Run from the repository root (diffusers source tree at the fixtures' commit, see README.md):

    PYTHONPATH=/path/to/diffusers/src python3 test/golden/schedulers/make_scheduler_goldens.py [--no-pipeline]

Writes, beside this script:
  schedulers_more.safetensors           schedules + rollouts of every case below, from tiny-sd's scheduler config
  schedulers_more_tiny-sdxl.safetensors only if tiny-sdxl's scheduler config differs from tiny-sd's (today it does
                                        not; the TS test checks that and reuses the first file)
  pipeline_ddim_folder.safetensors      StableDiffusionPipeline on a copy of tiny-sd whose scheduler is DDIM
  pipeline_ddim_folder.scheduler_config.json   that copy's scheduler/scheduler_config.json
Deterministic: CPU, float32, 1 thread, fixed seeds; two runs give identical files.
"""

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import scipy
import scipy.integrate
import torch
from safetensors.torch import save_file

import diffusers
import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_a_module
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "../../../../shared/fixtures"))
if not os.path.isdir(FIXTURES):
    FIXTURES = os.environ.get("ATEDM_FIXTURES", FIXTURES)

# prefix -> (class, from_config overrides)
CASES = {
    "pndm": (PNDMScheduler, {}),
    "pndm_prk": (PNDMScheduler, {"skip_prk_steps": False}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "unipc_karras": (UniPCMultistepScheduler, {"use_karras_sigmas": True}),
    "unipc_o3": (UniPCMultistepScheduler, {"solver_order": 3}),
    "lms": (LMSDiscreteScheduler, {}),
    "lms_karras": (LMSDiscreteScheduler, {"use_karras_sigmas": True}),
    "euler_karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    "dpmpp2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
}
PREDICTIONS = {"eps": "epsilon", "v": "v_prediction"}
SCHEDULE_STEPS = [4, 10, 25]
ROLLOUT_STEPS = [4, 10]
SHAPE = (1, 4, 4, 4)


def save(tensors, path, meta):
    """save_file with the metadata as ONE key (safetensors writes several keys in hash order: not reproducible)."""
    save_file(tensors, path, metadata={"info": json.dumps(meta, sort_keys=True)})
    os.chmod(path, 0o644)


def f32(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64)).to(torch.float32).contiguous()


def schedule_and_rollouts(cfg, out):
    for prefix, (cls, overrides) in CASES.items():
        for ptag, ptype in PREDICTIONS.items():
            key0 = f"{prefix}.{ptag}"
            for n in SCHEDULE_STEPS:
                s = cls.from_config(cfg, prediction_type=ptype, **overrides)
                s.set_timesteps(n)
                out[f"{key0}.n{n}.timesteps"] = f32(s.timesteps.numpy().astype(np.float64))
                if cls is not PNDMScheduler:
                    out[f"{key0}.n{n}.sigmas"] = f32(s.sigmas.numpy().astype(np.float64))
                out[f"{key0}.n{n}.init_noise_sigma"] = f32([float(s.init_noise_sigma)])
            for n in ROLLOUT_STEPS:
                rollout(cls.from_config(cfg, prediction_type=ptype, **overrides), n, f"{key0}.rollout_n{n}", out, prefix)


def spacings(cfg, out):
    """Schedules only, for the spacings the SD configs do not use (leading is covered above)."""
    for prefix in ["pndm", "pndm_prk", "euler_a", "unipc", "lms"]:
        cls, overrides = CASES[prefix]
        for spacing in ["linspace", "trailing"]:
            for n in SCHEDULE_STEPS:
                s = cls.from_config(cfg, timestep_spacing=spacing, **overrides)
                s.set_timesteps(n)
                key = f"spacing.{prefix}.{spacing}.n{n}"
                out[f"{key}.timesteps"] = f32(s.timesteps.numpy().astype(np.float64))
                if cls is not PNDMScheduler:
                    out[f"{key}.sigmas"] = f32(s.sigmas.numpy().astype(np.float64))
                out[f"{key}.init_noise_sigma"] = f32([float(s.init_noise_sigma)])


def rollout(s, n, key, out, prefix):
    """A pipeline-like loop with fake model outputs 0.5 * scaled_input + eps_i (eps_i fixed per step)."""
    s.set_timesteps(n)
    steps = len(s.timesteps)
    g = torch.Generator().manual_seed(1234 + n)
    noise = torch.randn(SHAPE, generator=g)
    eps = torch.randn((steps, *SHAPE), generator=g)
    step_noises = torch.randn((steps, *SHAPE), generator=g)
    x = noise * s.init_noise_sigma
    out[f"{key}.noise"] = noise
    out[f"{key}.initial_sample"] = x.clone()
    scaled, outputs, prevs, preds = [], [], [], []
    calls = {"i": 0}

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):  # noqa: ARG001
        assert tuple(shape) == SHAPE
        t = step_noises[calls["i"]].clone().to(dtype)
        calls["i"] += 1
        return t

    saved = euler_a_module.randn_tensor
    euler_a_module.randn_tensor = fake_randn
    try:
        for i, t in enumerate(s.timesteps):
            xin = s.scale_model_input(x, t)
            mo = 0.5 * xin + eps[i]
            r = s.step(mo, t, x)
            scaled.append(xin)
            outputs.append(mo)
            prevs.append(r.prev_sample)
            if getattr(r, "pred_original_sample", None) is not None:
                preds.append(r.pred_original_sample)
            x = r.prev_sample
    finally:
        euler_a_module.randn_tensor = saved
    out[f"{key}.timesteps"] = f32(s.timesteps.numpy().astype(np.float64))
    out[f"{key}.scaled_inputs"] = torch.stack(scaled).contiguous()
    out[f"{key}.model_outputs"] = torch.stack(outputs).contiguous()
    out[f"{key}.prev_samples"] = torch.stack(prevs).contiguous()
    if preds:
        out[f"{key}.pred_original_samples"] = torch.stack(preds).contiguous()
    if prefix == "euler_a":
        assert calls["i"] == steps, (calls, steps)
        out[f"{key}.step_noises"] = step_noises.contiguous()


def quadrature_references(cfg, out):
    """scipy.integrate.quad values (float64 integrands, epsrel 1e-13) for the TS quadrature test."""

    def q(f, a, b):
        return scipy.integrate.quad(f, a, b, epsabs=0, epsrel=1e-13, limit=200)[0]

    vals = [
        q(np.exp, 0.0, 1.0),
        q(np.sqrt, 0.0, 1.0),
        q(lambda x: 1 / (1 + x * x), 0.0, 10.0),
        q(lambda x: np.log(x), 1.0, 3.0),
        q(lambda x: np.sin(20 * x), 0.0, 1.0),
    ]
    # float64 values stored as their bit patterns in I64 tensors (`*_f64bits`): readers that turn every float dtype
    # into float32 (atedm's readSafetensors does) still get them exactly.
    out["quad.values_f64bits"] = torch.tensor(vals, dtype=torch.float64).view(torch.int64)
    # LMS coefficients in float64 for LMSDiscreteScheduler.from_config(cfg).set_timesteps(10), order 4.
    s = LMSDiscreteScheduler.from_config(cfg)
    s.set_timesteps(10)
    sig = s.sigmas.numpy().astype(np.float64)
    coeffs = np.zeros((10, 4))
    for t in range(10):
        order = min(t + 1, 4)
        for cur in range(order):

            def deriv(tau, t=t, cur=cur, order=order):
                prod = 1.0
                for k in range(order):
                    if k != cur:
                        prod *= (tau - sig[t - k]) / (sig[t - cur] - sig[t - k])
                return prod

            coeffs[t, cur] = q(deriv, sig[t], sig[t + 1])
    out["quad.lms_n10_coeffs_f64bits"] = torch.tensor(coeffs, dtype=torch.float64).view(torch.int64)


def pipeline_ddim_folder(out_path, config_path):
    src = os.path.join(FIXTURES, "tiny-sd")
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "tiny-sd-ddim")
        shutil.copytree(src, folder, ignore=shutil.ignore_patterns("golden"))
        sched_dir = os.path.join(folder, "scheduler")
        DDIMScheduler.from_config(DDIMScheduler.load_config(sched_dir)).save_config(sched_dir)
        # from_pretrained takes the scheduler class from model_index.json (as Hub folders have it, both name DDIM).
        index_path = os.path.join(folder, "model_index.json")
        with open(index_path) as f:
            index = json.load(f)
        index["scheduler"] = ["diffusers", "DDIMScheduler"]
        with open(index_path, "w") as f:
            json.dump(index, f, indent=2)
        shutil.copyfile(os.path.join(sched_dir, "scheduler_config.json"), config_path)
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None)
        assert type(pipe.scheduler).__name__ == "DDIMScheduler", type(pipe.scheduler)
        pipe.set_progress_bar_config(disable=True)
        latents = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(2024))
        kwargs = dict(
            prompt="a red circle on a blue background",
            negative_prompt=None,
            num_inference_steps=4,
            guidance_scale=7.5,
            height=256,
            width=256,
        )
        res = pipe(**kwargs, latents=latents.clone(), output_type="latent")
        tensors = {
            "latents": latents.contiguous(),
            "timesteps": f32(pipe.scheduler.timesteps.numpy().astype(np.float64)),
            "init_noise_sigma": f32([float(pipe.scheduler.init_noise_sigma)]),
            "output.latents": res.images.contiguous(),
        }
        meta = {"call": kwargs, "diffusers_version": diffusers.__version__, "torch_version": torch.__version__}
        save(tensors, out_path, meta)


def main():
    configs = {}
    for model in ["tiny-sd", "tiny-sdxl"]:
        with open(os.path.join(FIXTURES, model, "scheduler", "scheduler_config.json")) as f:
            configs[model] = json.load(f)
    meta = {"diffusers_version": diffusers.__version__, "torch_version": torch.__version__, "scipy_version": scipy.__version__}
    out = {}
    schedule_and_rollouts(configs["tiny-sd"], out)
    spacings(configs["tiny-sd"], out)
    quadrature_references(configs["tiny-sd"], out)
    save(out, os.path.join(HERE, "schedulers_more.safetensors"), {**meta, "config": "tiny-sd"})
    if configs["tiny-sdxl"] != configs["tiny-sd"]:
        out = {}
        schedule_and_rollouts(configs["tiny-sdxl"], out)
        spacings(configs["tiny-sdxl"], out)
        save(out, os.path.join(HERE, "schedulers_more_tiny-sdxl.safetensors"), {**meta, "config": "tiny-sdxl"})
    if "--no-pipeline" not in sys.argv:
        pipeline_ddim_folder(
            os.path.join(HERE, "pipeline_ddim_folder.safetensors"),
            os.path.join(HERE, "pipeline_ddim_folder.scheduler_config.json"),
        )


if __name__ == "__main__":
    main()
