# Shared by tools/gpu_figures.sh and tools/gpu_train.sh (sourced, not run): the Python packages the GPU machine lacks.
#
# The GPU machine has Python 3.12 with torch, numpy, einops and safetensors, but neither MONAI, SimpleITK nor
# jsonschema, cannot reach any package index, and takes at most 64 MiB of working tree and carried files.
# SimpleITK's wheel alone is 50 MiB, so its package travels as an xz archive (28 MiB) that is unpacked there; the
# other packages travel as wheels.

GPU_ENV=${GPU_ENV:-.gpu}

# gpu_env_prepare: locally (needs pip's package index, about 4 minutes): the wheels into $GPU_ENV/ (git-ignored)
gpu_env_prepare() {
    local dest=$GPU_ENV.partial sitk
    rm -rf "$dest" && mkdir -p "$dest"
    local pip="${PYTHON:-.venv/bin/python} -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 -d $dest/wheels"
    $pip monai==1.6.1 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
    $pip SimpleITK==2.5.7
    sitk=$(mktemp -d)
    unzip -q "$dest"/wheels/simpleitk-*.whl -d "$sitk"
    rm "$dest"/wheels/simpleitk-*.whl
    tar -C "$sitk" -cf - SimpleITK | xz -9 -T0 > "$dest/simpleitk.tar.xz"
    rm -rf "$sitk"
    rm -rf "$GPU_ENV" && mv "$dest" "$GPU_ENV"
}

# gpu_env_install: on the GPU machine, from the repository root with $GPU_ENV carried; sets PYTHONPATH
gpu_env_install() {
    local site=/tmp/glims-gpu-site
    rm -rf "$site" && mkdir -p "$site"
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
        "$GPU_ENV"/wheels/*.whl
    tar -C "$site" -xJf "$GPU_ENV/simpleitk.tar.xz"
    export PYTHONPATH="$site:$PWD/GLIMSSegmenter"
}
