#!/usr/bin/env bash
# The study of docs/results.md: what pruning costs in quality on the embedded shapes model, at matched FLOPs.
# Usage: bash eval/study.sh [OUT_ROOT]   (default /tmp/atedm-study). Every eval resumes where it stopped, so a rerun
# only rescores. About 2.5 h as written; the two evals can also run side by side, one thread each (as for docs/results.md).
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
#    matched to three budgets; at fixed ratios that match 0.05 and 0.13 (from the sweep's plan), AT-EDM without DSAP,
#    with G-WPR and with a random ranking (the sweep's two contenders), and ToMe (all its blocks).
$ATEDM eval --prompts eval/val-one-object.txt --seeds 5 --steps 20 --threads 1 --budgets 0.02,0.05,0.13 \
  --methods none,atedm:recovery=cosine,atedm:0.18:recovery=cosine:schedule=none,atedm:0.495:recovery=cosine:schedule=none,atedm:0.18:recovery=cosine:score=random:schedule=none,atedm:0.495:recovery=cosine:score=random:schedule=none,tome:0.219:tome-max-downsample=8,tome:0.684:tome-max-downsample=8 \
  --out "$OUT/headline" --progress > "$OUT/headline.txt"

# 3. Reports, tables and plots for docs/results.md.
for run in sweep headline; do
  $ATEDM report --in "$OUT/$run"
  cp "$OUT/$run/report.html" "docs/results/$run-report.html"
  node --import tsx eval/results_tables.ts "$OUT/$run" --by-budget > "$OUT/$run.md"
  node --import tsx eval/report_pngs.ts "$OUT/$run" "$OUT/$run-plots" --height 900
  mkdir -p "docs/img/results/$run"
  for plot in alignment_all_correct-saving alignment_all_correct-speedup alignment_all_correct_delta-saving fd-saving psnr-saving; do
    cp "$OUT/$run-plots/plot-$plot.png" "docs/img/results/$run/"
  done
done
