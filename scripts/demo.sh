#!/usr/bin/env bash
# The main job on built-in synthetic data, as `make demo` runs it. Each step is a plain
# `sandwatch` command, so this file doubles as a walk-through of the pipeline.
set -euo pipefail
OUT=${1:-demo-out}
SW=${SANDWATCH:-.venv/bin/sandwatch}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Start afresh, but only over a folder this script made (it leaves a marker): never delete
# someone's own folder that happens to have the same name.
MARK="$OUT/.sandwatch-demo"
if [ -e "$OUT" ] && [ ! -e "$MARK" ]; then
    echo "error: $OUT exists and was not made by the demo; move it away or run: make demo DEMO=another-folder" >&2
    exit 2
fi
if [ -e "$MARK" ]; then
    echo "removing the previous demo output in $OUT"
    rm -rf "$OUT"
fi
mkdir -p "$OUT" && touch "$MARK"
step "1. Synthetic Sentinel-2 demo sites (13-band L1C-like GeoTIFFs, mining polygons, rivers)"
$SW demo-data "$OUT/data" --sites 6 --size 512 --seed 0

step "2. What is in one scene"
SCENE=$(ls "$OUT"/data/*/*.tif | head -n 1)
$SW info "$SCENE"

step "3. Mining polygons -> label mask and confidence weights on the scene's grid"
POLY=$(ls "$(dirname "$SCENE")"/*mining*.geojson | head -n 1)
$SW labels rasterize "$POLY" --like "$SCENE" -o "$OUT/labels/mask.tif" --weights "$OUT/labels/weights.tif"

step "4. Area of interest: within 1 km of the river"
RIVERS=$(ls "$(dirname "$SCENE")"/*river*.geojson | head -n 1)
$SW aoi --like "$SCENE" --rivers "$RIVERS" --buffer 1000 -o "$OUT/aoi/aoi.geojson"

step "5. Geographic split: whole clusters of sites go to training or validation"
$SW dataset split "$OUT/data/manifest.yaml" --clusters 3 --val-fraction 0.34 --seed 0

step "6. Dataset statistics"
$SW dataset stats "$OUT/data/manifest.yaml"

step "7. Train a narrow U-Net on the training clusters (configs/demo.yaml; a few minutes on 2 cores)"
$SW train configs/demo.yaml --set manifest="$OUT/data/manifest.yaml" --set run_dir="$OUT/run"

step "8. Predict the held-out validation scenes: probability COG, mask, polygons"
$SW predict "$OUT/run/checkpoints/best.pt" --manifest "$OUT/data/manifest.yaml" --split val -o "$OUT/predictions" -q

step "9. Evaluate on the held-out cluster: precision, recall, PR curve, AP; an HTML report"
$SW evaluate --predictions "$OUT/predictions" "$OUT/data/manifest.yaml" --split val -o "$OUT/report"

printf '\nDemo outputs are in %s/ ; open %s/report/report.html\n' "$OUT" "$OUT"
