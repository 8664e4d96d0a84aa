#!/usr/bin/env bash
# Regenerate every lock file from its source, keeping the versions already locked where they still
# fit (uv prefers them), so a lock only moves when a source changed or you ask it to:
#
#   scripts/lock.sh              after editing pyproject.toml or requirements/*.in
#   scripts/lock.sh --upgrade    move everything to the newest versions the sources allow
#
#   source                              lock                            installed by
#   pyproject.toml                      uv.lock                         scripts/setup.sh (uv sync)
#   uv.lock, extra "edge"               requirements/edge.txt           deploy/install-edge.sh (Pi, pip)
#   requirements/uv.in                  requirements/uv.txt             scripts/setup.sh (bootstrap)
#   requirements/peers*.in              requirements/peers*.txt         scripts/setup.sh (peer venvs)
#   requirements/homeassistant.in       requirements/homeassistant.txt  scripts/setup.sh (.venv-homeassistant, 3.13)
#
# tests/test_locks.py fails when any lock no longer matches its source.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.cache/tools/bin/uv}
[ -x "$UV" ] || { echo "lock: no $UV: run scripts/setup.sh first (it installs the pinned uv)" >&2; exit 1; }
upgrade=()
[ "${1:-}" = "--upgrade" ] && upgrade=(--upgrade)

echo "lock: uv.lock"
"$UV" lock "${upgrade[@]}"

echo "lock: requirements/edge.txt (the edge extra, for a Raspberry Pi without uv)"
"$UV" export --frozen --quiet --no-dev --extra edge --no-emit-project --no-header \
  --output-file requirements/edge.txt.new
{
  echo "# The edge extra, exported from uv.lock by scripts/lock.sh (do not edit): Raspberry Pi OS (aarch64)"
  echo "# and x86_64, Python 3.11-3.12. pip install --require-hashes -r requirements/edge.txt, then the project."
  cat requirements/edge.txt.new
} >requirements/edge.txt
rm requirements/edge.txt.new

compile() {  # compile NAME [uv pip compile options…]
  local name="$1"
  shift
  echo "lock: requirements/$name.txt"
  # --no-config: the project's [tool.uv] settings are for uv.lock, not for these environments
  "$UV" pip compile "requirements/$name.in" --no-config --quiet --generate-hashes --universal \
    --custom-compile-command "scripts/lock.sh" "${upgrade[@]}" "$@" --output-file "requirements/$name.txt"
}
compile uv
compile peers --python-version 3.11
compile peers-oww --python-version 3.11 --override requirements/peers-oww.override
compile peers-cuda --python-version 3.11
compile homeassistant --python-version 3.13
echo "lock: done"
