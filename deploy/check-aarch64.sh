#!/usr/bin/env bash
# Check that everything `pip install 'sensorium[edge]'` needs has a wheel for 64-bit Raspberry Pi OS
# (Bookworm: aarch64, glibc 2.36, CPython 3.11), so a Pi never has to compile anything.
#
#   deploy/check-aarch64.sh [PYTHON]      # PYTHON: interpreter with pip (default: .venv/bin/python)
#
# Step 1 resolves the whole dependency closure for aarch64 with binary wheels only (pip download
# --platform … --only-binary=:all:). Step 2 checks each direct requirement on its own with --no-deps,
# so a failure names the package. Exit 0 when every requirement has a wheel, 1 otherwise.
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

# The core dependencies plus the `edge` extra, read from pyproject.toml (the single source).
"$py" - "$repo/pyproject.toml" >"$work/reqs.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["edge"]:
    print(req)
PY

echo "== edge requirements (core + [edge]) for aarch64 / CPython $pyver"
sed 's/^/   /' "$work/reqs.txt"

fail=0
echo "== step 1: resolve the full closure, binary wheels only"
if "$py" -m pip download --quiet --disable-pip-version-check --dest "$work/wheels" --only-binary=:all: \
  --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" --abi abi3 --abi none \
  "${platforms[@]}" --platform any -r "$work/reqs.txt" >"$work/closure.log" 2>&1; then
  wheels=("$work"/wheels/*.whl)
  echo "   resolved ${#wheels[@]} wheels:"
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
  echo "FAIL: the closure does not resolve with aarch64 wheels only:"; tail -n 20 "$work/closure.log"; fail=1
fi

echo "== step 2: each requirement on its own (--no-deps)"
while read -r req; do
  [[ -z "$req" ]] && continue
  if out=$("$py" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work/one" \
    --only-binary=:all: --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" --abi abi3 \
    --abi none "${platforms[@]}" --platform any "$req" 2>&1); then
    echo "   ok    $req"
  else
    echo "   FAIL  $req: no aarch64 wheel ($(echo "$out" | grep -m1 -i error || true))"; fail=1
  fi
done <"$work/reqs.txt"

if [[ $fail -eq 0 ]]; then echo "PASS: every edge dependency installs from aarch64 wheels"; else echo "FAIL"; fi
exit $fail
