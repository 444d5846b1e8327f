#!/bin/sh
# The offline pipeline: prune (LRP, 50%), correct (toxicity), export both for the server.
# Masks go to /artifacts/pipeline, servable exports to /artifacts/serve (what serve.yaml names).
# Every step writes its folder atomically, and a folder that already holds a manifest is kept:
# a retried Job (backoffLimit) resumes where it stopped instead of starting over.
set -eu
work=/artifacts/pipeline
serve=/artifacts/serve
mkdir -p "$work" "$serve"

step() {  # step FOLDER COMMAND...: run COMMAND unless FOLDER already holds an artifact
    folder=$1
    shift
    if [ -f "$folder/manifest.json" ]; then
        echo "keep $folder (already built)"
    else
        echo "build $folder: $*"
        "$@"
    fi
}

step "$work/lrp-mask" excise prune --model "$MODEL" --method lrp --sparsity "$SPARSITY" --reconstruct \
    --calibration "$CALIBRATION" --device "$DEVICE" --out "$work/lrp-mask"
step "$serve/smollm2-lrp50" excise export "$work/lrp-mask" --to hf --out "$serve/smollm2-lrp50"
# excise correct's defaults are the measured protocol: its best method, a sweep of budgets chosen
# on the validation prompts within +1% perplexity, test figures in the manifest.
step "$work/detox" excise correct --model "$MODEL" --behaviour "$BEHAVIOUR" \
    --device "$DEVICE" --out "$work/detox"
step "$serve/smollm2-detox" excise export "$work/detox" --to lora --out "$serve/smollm2-detox"
# The servers' init containers wait for this file.
touch "$serve/.pipeline-complete"
echo "artifacts ready in $serve"
