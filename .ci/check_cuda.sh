#!/usr/bin/env bash
# What can be checked of the CUDA build on a machine without a GPU or a CUDA PyTorch:
# every kernels/*.cu compiles on its own with nvcc for each architecture we ship, and the C++ glue
# that does not need PyTorch's CUDA headers passes a syntax check against the CPU PyTorch headers.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUDA_INCLUDE=${CUDA_INCLUDE:-${CUDA_HOME:-/usr/local/cuda}/include}
ARCHS=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

gencode=()
for arch in ${ARCHS//;/ }; do
  arch=${arch%+PTX}
  sm=${arch/./}
  gencode+=(-gencode "arch=compute_${sm},code=sm_${sm}")
done

shopt -s nullglob
cu_files=(kernels/*.cu)
[ ${#cu_files[@]} -gt 0 ] || { echo "no .cu files under kernels/"; exit 1; }
for file in "${cu_files[@]}"; do
  echo "nvcc $file for ${ARCHS}"
  "$NVCC" -std=c++17 -I kernels -c "$file" -o "$out/$(basename "$file").o" "${gencode[@]}" \
    -Werror all-warnings -Xcompiler -Wall
done

torch_includes=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-I' + p for p in include_paths()))")
python_include=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
for file in $(find csrc -name "*_cuda.cpp" | sort); do
  if grep -qE '#include <(ATen/cuda|c10/cuda)/' "$file"; then
    echo "skip $file (needs PyTorch's CUDA headers; built only with CUDA PyTorch)"
    continue
  fi
  echo "g++ -fsyntax-only $file"
  # shellcheck disable=SC2086
  g++ -std=c++20 -fsyntax-only -Wall -Werror -DMMFAST_WITH_CUDA $torch_includes -I"$python_include" \
    -I csrc -I kernels -I "$CUDA_INCLUDE" "$file"
done
echo "CUDA checks passed"
