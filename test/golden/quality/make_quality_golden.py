"""Golden values for src/metrics/quality.ts (PSNR, SSIM) and src/metrics/frechet.ts (Frechet distance).

Run from the repository root:

    python3 test/golden/quality/make_quality_golden.py

It writes test/golden/quality/quality.json: deterministic inputs (numpy, fixed seed) stored as plain arrays,
and the values scikit-image / scipy compute on them. See README.md beside this file.

- PSNR: skimage.metrics.peak_signal_noise_ratio(a, b, data_range=R)
- SSIM: skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=R), every other argument at
  its default (win_size 7, uniform filter, use_sample_covariance=True, K1 0.01, K2 0.03).
- Frechet distance: pytorch-fid's calculate_frechet_distance (copied below, scipy.linalg.sqrtm) on
  mean / np.cov(rowvar=False) of each feature set; also the same trace term by a symmetric eigen-decomposition
  (scipy.linalg.eigh) as a second opinion on how accurate sqrtm is.
"""

import json
import os
import sys

import numpy as np
import scipy
import scipy.linalg as linalg
import skimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quality.json")
rng = np.random.default_rng(20261212)


def smooth_image(h, w, c):
    """A smooth uint8 image (low-frequency sinusoids plus mild noise), so SSIM is not dominated by noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, c))
    for ch in range(c):
        fx, fy, ph = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)
        img[..., ch] = 128 + 90 * np.sin(fx * x + fy * y + ph) + rng.normal(0, 8, (h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --- images -----------------------------------------------------------------------------------------------
H, W, C = 32, 32, 3
base = smooth_image(H, W, C)
noisy = np.clip(base.astype(np.int32) + rng.normal(0, 12, base.shape).round().astype(np.int32), 0, 255).astype(np.uint8)
shifted = np.clip(np.roll(base, (1, 2), axis=(0, 1)).astype(np.int32) + 10, 0, 255).astype(np.uint8)
blocky = base.copy()
blocky[8:20, 10:26, :] = rng.integers(0, 256, (12, 16, C), dtype=np.uint8)  # a patch replaced by noise

# A float pair in [0, 1] (values on a 1/256 grid, so the JSON stays short and float32 holds them exactly),
# non-square, data_range 1. Evaluated in float64 (what atedm computes in).
fh, fw = 12, 20
f_a = rng.integers(0, 257, (fh, fw, 3)) / 256.0
f_b = np.clip(f_a + rng.integers(-20, 21, (fh, fw, 3)) / 256.0, 0, 1)
# A single-channel 7x9 pair (the smallest size SSIM accepts with win_size 7).
g_a = rng.integers(0, 256, (7, 9, 1), dtype=np.uint8)
g_b = np.clip(g_a.astype(np.int32) + rng.integers(-30, 31, g_a.shape), 0, 255).astype(np.uint8)


def image_case(name, a, b, data_range, kind):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    case = {
        "name": name,
        "kind": kind,
        "height": int(a.shape[0]),
        "width": int(a.shape[1]),
        "channels": int(a.shape[2]),
        "data_range": data_range,
        "a": a.reshape(-1).tolist(),
        "b": b.reshape(-1).tolist(),
        "psnr": float(peak_signal_noise_ratio(a, b, data_range=data_range)),
        "ssim": float(structural_similarity(a, b, channel_axis=-1, data_range=data_range)),
    }
    if kind == "float":
        # skimage keeps float32 input in float32; record what it gives there too (atedm works in float64).
        a32, b32 = a64.astype(np.float32), b64.astype(np.float32)
        case["ssim_float32_input"] = float(structural_similarity(a32, b32, channel_axis=-1, data_range=data_range))
        case["psnr_float32_input"] = float(peak_signal_noise_ratio(a32, b32, data_range=data_range))
    return case


images = [
    image_case("noise_sigma12", base, noisy, 255, "uint8"),
    image_case("shift_and_brighten", base, shifted, 255, "uint8"),
    image_case("patch_replaced", base, blocky, 255, "uint8"),
    image_case("float_12x20_range1", f_a, f_b, 1.0, "float"),
    image_case("gray_7x9", g_a, g_b, 255, "uint8"),
]


# --- Frechet distance ---------------------------------------------------------------------------------------
def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid 0.3.0 (src/pytorch_fid/fid_score.py), verbatim but for sqrtm's deprecated `disp` argument."""
    mu1 = np.atleast_1d(mu1)
    mu2 = np.atleast_1d(mu2)
    sigma1 = np.atleast_2d(sigma1)
    sigma2 = np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape
    assert sigma1.shape == sigma2.shape
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        print("fid calculation produces singular product; adding %s to diagonal of cov estimates" % eps, file=sys.stderr)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


def trace_sqrt_eigh(s1, s2):
    """tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))), the way frechet.ts computes it."""
    w, v = linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r @ s2 @ r
    e = linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(e, 0, None)).sum())


def features(n, dim, shift, scale):
    """Correlated features: Gaussian rows times a fixed random mixing matrix, rounded to 2 decimals."""
    mix = rng.normal(0, 1, (dim, dim)) / np.sqrt(dim)
    x = rng.normal(0, 1, (n, dim)) @ mix * scale + shift
    return np.round(x, 2)


def fd_case(name, xa, xb):
    mu_a, mu_b = xa.mean(axis=0), xb.mean(axis=0)
    s_a, s_b = np.cov(xa, rowvar=False), np.cov(xb, rowvar=False)
    diff = mu_a - mu_b
    eig_fd = float(diff.dot(diff) + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt_eigh(s_a, s_b))
    return {
        "name": name,
        "dim": int(xa.shape[1]),
        "n_a": int(xa.shape[0]),
        "n_b": int(xb.shape[0]),
        "a": xa.reshape(-1).tolist(),
        "b": xb.reshape(-1).tolist(),
        "mean_sq": float(diff.dot(diff)),
        "trace_a": float(np.trace(s_a)),
        "fd": float(calculate_frechet_distance(mu_a, s_a, mu_b, s_b)),
        "fd_eigh": eig_fd,
    }


frechet = [
    fd_case("dim8_n50_n60", features(50, 8, 0.0, 1.0), features(60, 8, 0.3, 1.2)),
    fd_case("dim64_n100_n120", features(100, 64, 0.0, 1.0), features(120, 64, 0.1, 0.9)),
]

out = {
    "generator": "test/golden/quality/make_quality_golden.py",
    "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__, "skimage": skimage.__version__},
    "images": images,
    "frechet": frechet,
}
with open(OUT, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
for c in images:
    print(c["name"], "psnr", c["psnr"], "ssim", c["ssim"])
for c in frechet:
    print(c["name"], "fd", c["fd"], "fd_eigh", c["fd_eigh"], "rel", abs(c["fd"] - c["fd_eigh"]) / c["fd"])
