#!/usr/bin/env bash
# GPU training benchmark (< 5 min on one H100/H200): ViT-B-16, bf16, AnyReader on and off, with gradient
# checkpointing and a per-batch tile cap. Prints samples/s, tiles/s, peak memory and MFU per mode.
#
# The GPU machine has Python + torch but no open_clip and no network. Before carrying the repo there, fill the
# git-ignored wheel folder on a machine with network (pure-Python wheels plus the few binary ones it lacks):
#   pip download -d .whl --python-version 3.12 --only-binary=:all: --no-deps \
#       open_clip_torch ftfy wcwidth regex timm huggingface_hub safetensors tqdm pyyaml filelock fsspec \
#       packaging typing_extensions torchvision pyarrow shapely jinja2 markupsafe orjson rich markdown-it-py \
#       mdurl pygments defusedxml click pillow imagehash pywavelets scipy numpy
# (torchvision must match the machine's torch; skip it if the machine has one). Nothing is installed that is
# already importable, and no venv is created.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

need=()
for mod in open_clip:open_clip_torch ftfy:ftfy regex:regex timm:timm huggingface_hub:huggingface_hub \
           safetensors:safetensors tqdm:tqdm pyarrow:pyarrow shapely:shapely jinja2:jinja2 orjson:orjson \
           rich:rich defusedxml:defusedxml click:click PIL:pillow imagehash:imagehash torchvision:torchvision; do
  "$PY" -c "import ${mod%%:*}" 2>/dev/null || need+=("${mod##*:}")
done
if ((${#need[@]})); then
  echo "installing from .whl/: ${need[*]}"
  "$PY" -m pip install --quiet --no-index --find-links .whl "${need[@]}"
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

# 256 px-to-2048 px synthetic scenes are made on the machine by bench_train (mmsar synth + d2c convert).
# ViT-B-16, bf16: batch 96 x up to 6 tiles + thumbnail = at most 672 encoder images; tile cap 512.
timeout 270 "$PY" benchmarks/bench_train.py --arch ViT-B-16 --device cuda --bf16 --batch 96 --steps 8 \
  --images 192 --size 1024 --max-tiles 6 --tile-cap 512 --grad-checkpointing --workers 8 --no-write "$@"
