#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool), from the repo root, with .whl and .gpudata carried
# (prepare them with benchmarks/gpu/fetch.sh). Everything it measures is written under $OUT.
#   bash benchmarks/gpu/run.sh all     # CUDA tests, DLPFC/STARmap benchmark, 1M-cell run
#   bash benchmarks/gpu/run.sh test dlpfc      # any of: test dlpfc scale (each < 10 min on an H100)
set -uo pipefail
what=" ${*:-all} "  # one or more of: all test dlpfc scale
out="${OUT:-/tmp/scai-gpu-out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src" SCAI_SHARED_DATA="$PWD/.gpudata" PYTHONUNBUFFERED=1
export SCAI_COMMIT="${SCAI_COMMIT:-unknown}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, napari_scai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$out/gpu.txt" || exit 1
rc=0
if [[ $what == *" all "* || $what == *" test "* ]]; then
  # the model, graph and clustering tests, the CUDA (-m gpu) ones included. Not the GUI tests
  # (no Qt there), the squidpy comparison, nor the bundled-sample test (needs spatialdata; the benchmark below scores
  # DLPFC on the device instead).
  python3 -m pytest -q -p no:cacheprovider tests/test_domains.py tests/test_graph.py \
    tests/test_cluster.py -k "not dlpfc_151673_accuracy and not squidpy" 2>&1 | tee "$out/pytest.txt"
  rc=$((rc | ${PIPESTATUS[0]}))
fi
if [[ $what == *" all "* || $what == *" dlpfc "* ]]; then
  python3 benchmarks/domains.py --device ${SCAI_DEVICE:-cuda} --seeds ${SCAI_SEEDS:-5} --results "$out/RESULTS-gpu.md" 2>&1 \
    | tee "$out/dlpfc.txt"
  rc=$((rc | ${PIPESTATUS[0]}))
fi
if [[ $what == *" all "* || $what == *" scale "* ]]; then
  python3 benchmarks/domains.py --device ${SCAI_DEVICE:-cuda} --scale ${SCAI_SCALE:-1000000} --seeds 1 --methods gnn,b \
    --results "$out/RESULTS-gpu.md" 2>&1 | tee "$out/scale.txt"
  rc=$((rc | ${PIPESTATUS[0]}))
fi
exit $rc
