#!/usr/bin/env bash
# Train several variants of the shapes model at once on one GPU (the lent device machine; see training/README.md,
# "Training on a GPU"). The model is so small that one run cannot keep a GPU busy (each step is a few hundred tiny
# kernels), so the variants run side by side, each in its own process.
#
#   training/device_train.sh CARRY OUT MINUTES
#
# CARRY: a folder with diffusers/ (the package, for PYTHONPATH), data/ (shapes.safetensors.xz, captions.json.xz,
#        meta.json: an `atedm export-shapes` folder, compressed) and init.pt (a --weights-out file to start from).
# OUT:   where each variant writes NAME.pt (its EMA weights, float16, written every --ckpt-minutes and at the end)
#        and NAME.log.
# MINUTES: training time per variant (the cosine learning-rate schedule ends there).
set -u
CARRY=${1:?carry folder}
OUT=${2:?output folder}
MINUTES=${3:?minutes}
PY=${PYTHON:-python3}
mkdir -p "$OUT" /tmp/shapes-data
export PYTHONPATH="$CARRY" PYTHONUNBUFFERED=1

t0=$(date +%s)
for f in shapes.safetensors captions.json; do
  if command -v xz >/dev/null; then
    xz -dc -T0 "$CARRY/data/$f.xz" > "/tmp/shapes-data/$f" || exit 1
  else
    "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      "$CARRY/data/$f.xz" "/tmp/shapes-data/$f" || exit 1
  fi
done
cp "$CARRY/data/meta.json" /tmp/shapes-data/
echo "data ready in $(( $(date +%s) - t0 )) s: $(du -sh /tmp/shapes-data | cut -f1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"

# The shipped architecture: preset s, CoordConv channels, 16-token captions, v prediction, half of each batch from
# t >= 500. Each variant stops (and saves) after MINUTES of training, or on SIGTERM.
common=(--device "${DEVICE:-cuda}" --bf16 --data /tmp/shapes-data --no-checkpoints --no-export --max-minutes "$MINUTES"
        --steps 1000000 --ckpt-minutes 1.5 --log-every 100 --preset s --coord-channels 2 --max-length 16
        --prediction-type v_prediction --snr-gamma 0 --t-high-frac 0.5 --t-high-min 500)
limit=$(awk "BEGIN { print int($MINUTES * 60 + 75) }")  # seconds: setup, then SIGTERM (saves, exits) if still going
variant() {
  local name=$1
  shift
  # shellcheck disable=SC2086 # EXTRA: more flags for every variant, split on spaces (a local smoke test uses it)
  timeout -s TERM "$limit" "$PY" training/train_shapes.py "${common[@]}" --ckpt-dir "/tmp/ckpt-$name" \
    --weights-out "$OUT/$name.pt" "$@" ${EXTRA:-} > "$OUT/$name.log" 2>&1 &
}
variant A --init-from "$CARRY/init.pt" --batch 512 --lr 1e-3 --warmup 200
variant B --batch 512 --lr 1e-3 --warmup 500 --seed 1
variant C --init-from "$CARRY/init.pt" --batch 256 --lr 5e-4 --warmup 200
sleep "${PEEK:-60}"
tail -n 3 "$OUT"/*.log
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
wait
for f in "$OUT"/*.log; do echo "== $f"; tail -n 4 "$f"; done
ls -la "$OUT"
echo "total $(( $(date +%s) - t0 )) s"
