#!/usr/bin/env bash
# GNOLR training on a GPU box (issue 18): the default-size model through the stages' own loop
# (train_speed.py on arrays from export_arrays.py) and the scale rows (scale_train.py) on CUDA, then one CPU
# row of each on the same box for a same-run ratio. Writes its tables to ${OUT:-.}/gpu_*.txt.
#
#   .venv/bin/python benchmarks/export_arrays.py syn.npz --features data/features  # on the CPU box
#   bash benchmarks/gpu_train.sh syn.npz                                        # on the GPU box
#
# A GPU box's image may lack some of this project's dependencies (polars, pydantic): wheels in
# .whl/ are installed to /tmp/site first. This path needs neither faiss nor MLflow nor BentoML.
set -euo pipefail
npz=${1:?usage: gpu_train.sh ARRAYS.npz}
out=${OUT:-.}
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $py -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } | tee "$out/gpu_env.txt"
# 1. default-size GNOLR (params.yaml architecture) through fit_gnolr: GPU at batch 2048 and 16384
$py benchmarks/train_speed.py "$npz" --models gnolr --accelerator gpu --epochs 2 \
    --batch-sizes 2048 16384 | tee "$out/gpu_train_speed.txt"
# 2. the scale rows on CUDA, 100 k and 1 M ids; then DDP over the GPUs there are (spawned ranks,
#    gloo: NCCL has no sparse all-reduce), kept apart so that a DDP failure loses no other row
$py benchmarks/scale_train.py --accelerator gpu --ids 100000 1000000 --rows 1000000 \
    --dense-rows 300000 --modes "single dense" "single sparse" | tee "$out/gpu_scale_train.txt"
ngpu=$($py -c "import torch; print(torch.cuda.device_count())")
$py benchmarks/scale_train.py --accelerator gpu --ddp-devices "$ngpu" --ids 100000 1000000 \
    --rows 1000000 --modes "ddp sparse" 2>"$out/gpu_ddp_stderr.txt" | tee "$out/gpu_ddp.txt" \
    || { echo "DDP on GPU failed:"; tail -30 "$out/gpu_ddp_stderr.txt"; }
# 3. the same box's CPU with two threads (the 2-core reference machine's count): a same-run ratio
OMP_NUM_THREADS=2 $py benchmarks/train_speed.py "$npz" --models gnolr --accelerator cpu --epochs 1 \
    | tee "$out/gpu_box_cpu_train_speed.txt"
# 4. a fit with validation, early stopping and the best checkpoint: one process vs DDP on the GPUs
$py benchmarks/gpu_fit_check.py 2>/dev/null | tee "$out/gpu_fit_check.json"
