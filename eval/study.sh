#!/usr/bin/env bash
# The study of docs/results.md: what pruning costs in quality on the embedded shapes model, at matched FLOPs.
# Usage: bash eval/study.sh [OUT_ROOT]   (default /tmp/atedm-study). Every eval resumes where it stopped, so a rerun
# only rescores. About 75 min on 2 cores (the two evals can run side by side, one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/atedm-study}
npm run build --silent
ATEDM="node bin/atedm.js"
SWEEP_METHODS=atedm:preset=paper,atedm:recovery=copy-delta,atedm:recovery=cosine,atedm:recovery=nearest,atedm:recovery=zero,atedm:recovery=copy-col,atedm:recovery=copy-sym,atedm:recovery=cosine:score=column-mean,atedm:recovery=cosine:score=random,atedm:recovery=cosine:iterations=3,atedm:recovery=cosine:iterations=30,atedm:recovery=cosine:schedule=none,tome:tome-max-downsample=8,tome:tome-max-downsample=8:schedule=dsap

# 1. The sweep: 100 validation prompts x 1 seed, every variant at three FLOPs budgets.
$ATEDM eval --prompts eval/val-one-object.txt --seeds 1 --steps 20 --threads 1 --budgets 0.05,0.13,0.21 \
  --methods "none,$SWEEP_METHODS" --out "$OUT/sweep" --progress > "$OUT/sweep.txt"

# 2. The headline points: 100 validation prompts x 5 seeds = 500 images per method. AT-EDM with the cosine recovery
#    matched to three budgets; ToMe (all its blocks) at the ratios that match 0.05 and 0.13 (from the sweep's plan:
#    0.219 and 0.684).
$ATEDM eval --prompts eval/val-one-object.txt --seeds 5 --steps 20 --threads 1 --budgets 0.02,0.05,0.13 \
  --methods none,atedm:recovery=cosine,tome:0.219:tome-max-downsample=8,tome:0.684:tome-max-downsample=8 \
  --out "$OUT/headline" --progress > "$OUT/headline.txt"

# 3. Reports, tables and plots for docs/results.md.
for run in sweep headline; do
  $ATEDM report --in "$OUT/$run" --out "docs/results/$run-report.html"
  node --import tsx eval/results_tables.ts "$OUT/$run" --by-budget > "$OUT/$run.md"
  node --import tsx eval/report_pngs.ts "$OUT/$run" "docs/img/results/$run"
done
