#!/usr/bin/env bash
# Alignment of the latest checkpoint in a run: export its EMA weights to a temporary folder and run
# `atedm eval-alignment` on a prompt file (default: every 5th held-out one-object prompt, 40 prompts).
#   training/eval_checkpoint.sh training/checkpoints-v [PROMPTS] [extra eval-alignment flags...]
# Prints one line: step, all_correct and the per-attribute accuracies. Needs PYTHONPATH (see README) and `npm run build`.
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt_dir=${1:?usage: training/eval_checkpoint.sh CKPT_DIR [PROMPTS] [eval-alignment flags...]}
prompts=${2:-}
shift $(( $# < 2 ? $# : 2 ))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -z "$prompts" ]]; then
  awk 'NR % 5 == 1' eval/heldout-one-object.txt > "$tmp/prompts.txt"
  prompts="$tmp/prompts.txt"
fi
step=$(training/.venv/bin/python training/train_shapes.py --export-only --ckpt-dir "$ckpt_dir" --out "$tmp/model" 2>/dev/null \
  | sed -n 's/^exported step \([0-9]*\).*/\1/p')
node bin/atedm.js eval-alignment --model "$tmp/model" --prompts "$prompts" --seeds 1 --json "$@" \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);
      console.log(JSON.stringify({step:Number(process.argv[1]),all_correct:r.all_correct,images:r.images,...r.per_attribute}))})' "$step"
