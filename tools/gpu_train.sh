#!/usr/bin/env bash
# Train the default BraTS model on from its bundled version in one command on a GPU machine (docs/TRAINING.md, "On a
# GPU machine in one call").
#
#   tools/gpu_train.sh prepare        locally, once: the packages the GPU machine lacks into .gpu/ (tools/gpu_env.sh,
#                                     needs pip's package index) and the two real training cases, stored on the
#                                     model's 2 mm processing grid, into .gpu_train/ (both git-ignored)
#   tools/gpu_train.sh run            on the GPU machine, from the repository root, with .gpu and .gpu_train
#                                     carried: synthetic cases made there, training from the bundled weights, the
#                                     results packed into $OUT (at most 8 files of 15 MiB). About 8 minutes.
#   tools/gpu_train.sh check          locally: the same steps on the CPU at toy sizes, to test this script
#   tools/gpu_train.sh unpack FROM TO locally: the files fetched from $OUT (folder FROM) checked and unpacked into TO
#   tools/gpu_train.sh evaluate RUN CASES LABELS [ARGS...]
#                                     locally: RUN's best weights registered with the bundled entry's settings in a
#                                     temporary user folder and scored with glims evaluate --breakdown
#
# Settings (environment; the defaults are the run planned for one H200, ~10 minutes per command):
#   GT_MINUTES=6 (training budget; or GT_EPOCHS=N)  GT_BATCH=8  GT_STEPS=150 (per epoch)  GT_LR=1e-4  GT_SEED=40
#   GT_SYNTH_SHARDS=16 GT_SYNTH_PER_SHARD=10 GT_SYNTH_SEED=2100 (shard i: seed GT_SYNTH_SEED+i, generated in
#   parallel)  GT_SHAPE="120 120 80"  GT_VAL_N=6 (validation cases, seed 7: the bundled model's validation set)
#   GT_REAL_WEIGHT=20 (each real case drawn as often as 20 synthetic cases)  GT_DEVICE=cuda  GT_THREADS=16
set -euo pipefail

cd "$(dirname "$0")/.."
GPU_ENV=.gpu
TRAIN_DATA=.gpu_train
R=${GLIMS_SHARED_BRATS:-../shared/data/brats}
source tools/gpu_env.sh

MODEL=glims-brats-synth
INIT=GLIMSSegmenter/glims/resources/weights/glims-brats-synth-1.4.0.json
PART_SIZE=15M

# prepare_cases: the real training cases on the processing grid, as training reads them (3.5 MB instead of 17)
prepare_cases() {
    local dest=$TRAIN_DATA.partial
    rm -rf "$dest" && mkdir -p "$dest/cases"
    "${PYTHON:-.venv/bin/python}" - "$dest/cases" "$MODEL" "$R/tcga_fg_6692" "$R/tcga_du_7294" <<'PY'
"""Store each real training case on the model's processing grid (glims.training.data.store_case_on_grid)."""
import sys

from glims.catalog import load_catalog
from glims.training.data import InputMatcher, discover_cases, store_case_on_grid

out, model, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
spec = load_catalog().get(model)
for case in discover_cases(folders, InputMatcher(spec.inputs, spec.match_priority)):
    folder = store_case_on_grid(case, spec.preprocessing, spec.output, out, [i.key for i in spec.inputs])
    print(case.case_id, "label", case.label.name, "->", folder)
PY
    rm -rf "$TRAIN_DATA" && mv "$dest" "$TRAIN_DATA"
    du -sh "$TRAIN_DATA"
}

# train_run WORK: synthetic data, training, results packed into $OUT
train_run() {
    local work=$1 shards=${GT_SYNTH_SHARDS:-16} per=${GT_SYNTH_PER_SHARD:-10} seed0=${GT_SYNTH_SEED:-2100}
    local shape=${GT_SHAPE:-120 120 80} i pids=() synth=() weights=()
    mkdir -p "$work"
    echo "== synthetic data: $shards x $per cases ($shape at 2 mm), validation ${GT_VAL_N:-6} cases (seed 7)"
    for ((i = 0; i < shards; i++)); do
        OMP_NUM_THREADS=1 $GLIMS synth --out "$work/synth$i" --n "$per" --seed $((seed0 + i)) --shape $shape \
            --spacing 2 --progress none > "$work/synth$i.log" 2>&1 &
        pids+=($!)
        synth+=("$work/synth$i")
        weights+=(1)
    done
    OMP_NUM_THREADS=1 $GLIMS synth --out "$work/val" --n "${GT_VAL_N:-6}" --seed 7 --shape $shape --spacing 2 \
        --progress none > "$work/val.log" 2>&1
    for i in "${pids[@]}"; do wait "$i"; done
    local budget=(--minutes "${GT_MINUTES:-6}")
    [ -n "${GT_EPOCHS:-}" ] && budget=(--epochs "$GT_EPOCHS")
    echo "== training from $INIT: ${budget[*]}, batch ${GT_BATCH:-8}, lr ${GT_LR:-1e-4}, seed ${GT_SEED:-40}"
    set +e
    $GLIMS train --cases "${synth[@]}" "$TRAIN_DATA/cases/tcga_fg_6692" "$TRAIN_DATA/cases/tcga_du_7294" \
        --case-weights "${weights[@]}" "${GT_REAL_WEIGHT:-20}" "${GT_REAL_WEIGHT:-20}" --val-cases "$work/val" \
        --out "$work/run" --init-weights "$INIT" --lr "${GT_LR:-1e-4}" "${budget[@]}" --spacing 2 \
        --batch-size "${GT_BATCH:-8}" --steps-per-epoch "${GT_STEPS:-150}" --tumour-fraction 0.4 --val-every 1 \
        --device "${GT_DEVICE:-cuda}" --threads "${GT_THREADS:-16}" --seed "${GT_SEED:-40}" --save-fp16 \
        --progress json > "$work/run-train.jsonl" 2> "$work/run-train.err"
    local status=$?
    set -e
    echo "   glims train exit code $status"
    tail -n 3 "$work/run-train.err" || true
    mkdir -p "$work/run"
    cp "$work/run-train.jsonl" "$work/run-train.err" "$work/run/"
    [ -f "$work/env.txt" ] && cp "$work/env.txt" "$work/run/"
    echo "== packing the run into $OUT"
    tar -C "$work" --exclude 'run/state.pt' --exclude 'run/last-e*' -czf - run | split -b "$PART_SIZE" - \
        "$OUT/run.tgz.part-"
    (cd "$OUT" && cat run.tgz.part-* | sha256sum | sed 's/-$/run.tgz/' > run.tgz.sha256)
    ls -l "$OUT"
    return "$status"
}

case "${1:-}" in
    prepare)
        [ -d "$GPU_ENV/wheels" ] || gpu_env_prepare
        prepare_cases
        du -sh "$GPU_ENV" "$TRAIN_DATA"
        ;;
    run)
        OUT=${OUT:-gpu_train_out}
        mkdir -p "$OUT"
        gpu_env_install
        GLIMS="python3 -m glims.cli"
        work=/tmp/glims-gpu-train
        rm -rf "$work" && mkdir -p "$work"
        { nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.version.cuda,
torch.cuda.get_device_name())"; git log -1 --format='%H %s' 2>/dev/null; } > "$work/env.txt" 2>&1 || true
        train_run "$work"
        ;;
    check)
        OUT=${OUT:-$(mktemp -d)}
        mkdir -p "$OUT"
        [ -d "$TRAIN_DATA/cases" ] || prepare_cases
        GLIMS="nice -n 10 ${PYTHON:-.venv/bin/python} -m glims.cli"
        export PYTHONPATH="$PWD/GLIMSSegmenter"
        work=$(mktemp -d)
        GT_SYNTH_SHARDS=2 GT_SYNTH_PER_SHARD=1 GT_SHAPE="48 48 40" GT_VAL_N=1 GT_EPOCHS=1 GT_STEPS=2 GT_BATCH=2 \
            GT_DEVICE=cpu GT_THREADS=2 train_run "$work"
        rm -rf "$work"
        bash tools/gpu_train.sh unpack "$OUT" "$OUT/unpacked"
        ;;
    unpack)
        from=${2:?unpack FROM TO}
        to=${3:?unpack FROM TO}
        (cd "$from" && cat run.tgz.part-* | sha256sum -c <(sed "s/run.tgz$/-/" run.tgz.sha256))
        mkdir -p "$to"
        cat "$from"/run.tgz.part-* | tar -C "$to" -xzf -
        ls -l "$to/run"
        grep -h '"epoch"' "$to/run/log.jsonl" | tail -n 3 || true
        ;;
    evaluate)
        run_dir=${2:?evaluate RUN CASES LABELS [ARGS...]}
        cases=${3:?evaluate RUN CASES LABELS [ARGS...]}
        labels=${4:?evaluate RUN CASES LABELS [ARGS...]}
        shift 4
        home=$(mktemp -d)
        trap 'rm -rf "$home"' EXIT
        "${PYTHON:-.venv/bin/python}" - "$run_dir/best.json" "$home" "$MODEL" <<'PY'
"""Register a run's best weights as glims-candidate with the bundled entry's catalog settings."""
import sys

from glims.catalog import load_catalog
from glims.registry import register_model

weights, home, model = sys.argv[1:4]
bundled = load_catalog().get(model)
settings = {"preprocessing": bundled.preprocessing.to_dict(), "output": {"thresholds": dict(bundled.output.thresholds)},
            "postprocessing": bundled.postprocessing.to_dict(), "inference": bundled.inference.to_dict()}
spec = register_model(weights, "glims-candidate", "brats", home=home, overrides=settings,
                      license_text="candidate weights, not for distribution")
print("registered", spec.ref, "from", weights)
PY
        nice -n 10 "${PYTHON:-.venv/bin/python}" -m glims.cli evaluate -m glims-candidate --home "$home" \
            --cases "$cases" --ref-labels "$labels" --breakdown "$@"
        ;;
    *)
        sed -n '2,21p' "$0"
        exit 2
        ;;
esac
