#!/usr/bin/env bash
# Check that the locked edge set (requirements/edge.txt, exported from uv.lock) has a wheel for 64-bit
# Raspberry Pi OS (Bookworm: aarch64, glibc 2.36, CPython 3.11), so a Pi never has to compile anything.
#
#   deploy/check-aarch64.sh [PYTHON]      # PYTHON: interpreter with pip (default: .venv/bin/python)
#
# It downloads every locked file for aarch64 with binary wheels only (pip download --platform …
# --only-binary=:all: --require-hashes); a failure names the package. Exit 0 when every locked
# package has a wheel, 1 otherwise.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${1:-$repo/.venv/bin/python}"
pyver="${PYVER:-3.11}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Pi OS Bookworm has glibc 2.36; pip does not widen an explicit --platform, so list the tags.
platforms=()
for tag in manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_24_aarch64 manylinux_2_27_aarch64 \
  manylinux_2_28_aarch64 manylinux_2_31_aarch64 manylinux_2_34_aarch64 manylinux_2_35_aarch64 manylinux_2_36_aarch64; do
  platforms+=(--platform "$tag")
done

echo "== the locked edge set (requirements/edge.txt) for aarch64 / CPython $pyver, binary wheels only"
fail=0
# --no-deps: the lock already lists the whole closure; --require-hashes: the same files the lock names
if "$py" -m pip download --quiet --disable-pip-version-check --dest "$work/wheels" --only-binary=:all: \
  --no-deps --require-hashes --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" --abi abi3 \
  --abi none "${platforms[@]}" --platform any -r "$repo/requirements/edge.txt" >"$work/closure.log" 2>&1; then
  wheels=("$work"/wheels/*.whl)
  echo "   ${#wheels[@]} wheels:"
  odd=""
  for w in "${wheels[@]}"; do
    w="${w##*/}"
    echo "   $w"
    [[ "$w" =~ (aarch64|none-any)\.whl$ ]] || odd+="$w"$'\n'
  done
  if [[ -n "$odd" ]]; then
    echo "FAIL: wheels that are neither aarch64 nor pure Python:"; echo "$odd"; fail=1
  fi
else
  echo "FAIL: the locked edge set has no aarch64 wheel for:"; grep -iE "error|no matching" "$work/closure.log" | head -n 20; fail=1
fi

if [[ $fail -eq 0 ]]; then echo "PASS: every locked edge dependency installs from aarch64 wheels"; else echo "FAIL"; fi
exit $fail
