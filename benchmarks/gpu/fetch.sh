#!/usr/bin/env bash
# Run HERE (the dev machine, PyPI reachable) before a GPU-machine call: fills two git-ignored
# folders at the repo root that the call carries (see README.md beside this file):
#   .whl/      wheels for the device's Python 3.12 that its image lacks (anndata, scanpy, ...)
#   .gpudata/  the benchmark datasets (a copy of ../shared/data subsets; ../shared does not travel)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
shared="${SCAI_SHARED_DATA:-$root/../shared/data}"
# Packages the device image (Python 3.12, torch, numpy, pandas, scipy, sklearn, h5py, numba, ...)
# does not have, pinned to one version each. pandas is pinned because anndata 0.12 wants < 3.
pkgs=(
  anndata==0.12.19 scanpy==1.11.5 shapely==2.2.0 zarr==3.4.2 numcodecs==0.17.1
  array-api-compat==1.16.0 legacy-api-wrap==1.5 scverse-misc==0.1.7 natsort==8.4.0
  session-info2==0.4.2 donfig==0.8.1.post1 google-crc32c==1.9.0 msgspec==0.22.0
  pynndescent==0.7.0 umap-learn==0.5.12 pandas==2.3.3 pytz==2026.6
)
rm -rf .whl .gpudata
mkdir -p .whl .gpudata/visium .gpudata/imaging
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plat[@]}" -d .whl "${pkgs[@]}"
cp -r "$shared/visium/dlpfc_151673" "$shared/visium/dlpfc_151674" .gpudata/visium/
cp "$shared/imaging/starmap_v1_by3_wang2018.h5ad" .gpudata/imaging/
du -sh .whl .gpudata
echo "carry: [\".whl\", \".gpudata\"]; command: SCAI_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu/run.sh [all|test|dlpfc|scale]"
