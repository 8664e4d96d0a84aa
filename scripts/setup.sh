#!/usr/bin/env bash
# One-time set-up: system packages, the .venv with every stage library, the peers' venvs and Home Assistant's.
# Everything Python comes from lock files (uv.lock, requirements/*.txt with hashes), installed by uv,
# so every machine gets the identical package set. Idempotent: a second run only checks.
# Used by `make demo`, `make test` and CI. Prints each step and how long it took.
#
#   scripts/setup.sh              everything (apt, uv, .venv, peers, .venv-homeassistant)
#   SKIP_APT=1 scripts/setup.sh   leave system packages alone (no root)
#   CUDA=1 scripts/setup.sh       also the CUDA 12 cuBLAS/cuDNN 9 that CTranslate2 (faster-whisper) loads on a GPU
#   PYTHON=python3.12 …           the interpreter the venvs are made from (default python3.11, else python3)
#   HA_PYTHON=…/python3.13        the interpreter of .venv-homeassistant (default python3.13, else pyenv's)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
# the interpreter itself, not a pyenv shim: uv rebuilds a venv whose interpreter path changed
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
VENV=${VENV:-.venv}
TOOLS=.cache/tools
ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }  # milliseconds → "12.3"
t_start=$(ms)
timings=()

step() { echo "setup: $*"; }
timed() {  # timed NAME COMMAND…: run it, print and remember how long it took
  local name="$1" t0 dt
  shift
  t0=$(ms)
  "$@"
  dt=$(($(ms) - t0))
  timings+=("$name=$(secs $dt)s")
  step "$name took $(secs $dt) s"
}

# ---------------------------------------------------------------- system packages
# flite/espeak-ng (second TTS backend, test speech), PortAudio (sounddevice), libasound2-plugins +
# pulseaudio (PortAudio's "pulse" device: null-sink microphone and speaker tests; only a "recommends"
# of pulseaudio), ffmpeg (video files), systemd (unit verification), mosquitto (MQTT broker for the
# Home Assistant bridge's tests), libturbojpeg0 (Home Assistant's camera helpers load it at start),
# chromium and chromium-driver (the console's browser tests drive Debian's chromium; no browser download),
# libspeexdsp1 (the edge's echo canceller; pulseaudio depends on it too).
apt_pkgs=(flite espeak-ng libportaudio2 libspeexdsp1 libasound2-plugins pulseaudio pulseaudio-utils ffmpeg systemd mosquitto libturbojpeg0 chromium chromium-driver)
apt_step() {
  local missing=() p
  for p in "${apt_pkgs[@]}"; do
    # dpkg -s also succeeds for a removed package that left its config files: ask for "installed"
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    step "system packages present"
    return
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  step "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
[ "${SKIP_APT:-0}" = 1 ] || timed apt apt_step

# ---------------------------------------------------------------- uv
# The pinned uv, verified by hash, in .cache/tools (always this one: a uv on PATH may be another version).
uv_version=$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' requirements/uv.txt)
UV=$TOOLS/bin/uv
uv_step() {
  if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$uv_version" ]; then
    step "installing uv $uv_version into $TOOLS"
    rm -rf "$TOOLS"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-cache-dir --require-hashes \
      --target "$TOOLS" -r requirements/uv.txt 2>&1 | grep -v "is ignored" || true
  fi
  "$UV" --version >/dev/null || { echo "setup: uv did not install (see pip's output above)" >&2; exit 1; }
}
timed uv uv_step
export UV_PYTHON_DOWNLOADS=never  # only the machine's own Pythons
# uv's progress bars only draw on a terminal; in a log, the per-package lines show progress instead.
[ -t 1 ] || export UV_NO_PROGRESS=1

# ---------------------------------------------------------------- the project's venv
venv_step() {
  step "syncing $VENV with uv.lock (extras workers, tts, stt-base, edge, bridges, vision-export; group dev)"
  # --locked: refuse to run when uv.lock no longer matches pyproject.toml (run scripts/lock.sh)
  local log extras=(--extra workers --extra tts --extra stt-base --extra edge --extra bridges --extra vision-export)
  [ "${CUDA:-0}" = 1 ] && extras+=(--extra cuda)
  log=$(mktemp)
  # --locked: refuse to run when uv.lock no longer matches pyproject.toml (run scripts/lock.sh)
  if ! UV_PROJECT_ENVIRONMENT="$VENV" "$UV" sync --locked --python "$PYTHON" \
    "${extras[@]}" --group dev \
    >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: uv sync failed (a stale uv.lock? run scripts/lock.sh)" >&2
    exit 1
  fi
  grep -Ev '^ [+-] ' "$log" | sed 's/^/  /' || true  # the summary; the package list goes to the venv
  mv "$log" "$VENV/.sync.log"
  # a changed environment must import; one synced from the same lock was checked when it was made
  local want
  want=$(cat uv.lock scripts/setup.sh | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.checked" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -c "import torch, faster_whisper, openwakeword, speechbrain, ultralytics, mediapipe, insightface, resemblyzer, piper, zmq, msgspec, mcap, wyoming, aiomqtt, openvino" \
      || { echo "setup: the stage libraries do not import; see uv's output above" >&2; exit 1; }
    echo "$want" >"$VENV/.checked"
  fi
}
timed venv venv_step

# ---------------------------------------------------------------- peers
# Each peer gets its own venv from its own lock: their pins conflict with ours and with each other
# (wyoming-openwakeword pins wyoming==1.2.0; wyoming-faster-whisper wants wyoming>=1.10.2).
peer_env() {  # peer_env DIR LOCK PYTHON CHECK_MODULE
  local dir="$1" lock="$2" py="$3" check="$4" stamp want
  stamp="$dir/.lock-sha256"
  want=$(sha256sum "$lock" | cut -c1-64)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$dir/bin/python" -c "import $check" 2>/dev/null; then
    step "$dir matches $lock"
    return
  fi
  step "syncing $dir with $lock"
  [ -x "$dir/bin/python" ] || "$UV" venv --quiet --python "$py" "$dir"
  "$UV" pip sync --quiet --python "$dir/bin/python" --require-hashes "$lock"
  "$dir/bin/python" -c "import $check"
  echo "$want" >"$stamp"
}
# Home Assistant core (the bridges' integration tests) needs Python 3.13: homeassistant 2025.4 is the
# last release that runs on 3.13.0. HA_PYTHON, else python3.13 on PATH, else pyenv's newest 3.13.
ha_python() {
  local root c
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for c in "${HA_PYTHON:-}" "$(command -v python3.13 || true)" \
    "$(printf '%s\n' "$root"/versions/3.13*/bin/python3.13 | sort -V | tail -1)"; do
    [ -n "$c" ] || continue
    # a pyenv shim exists on PATH even where it cannot run: ask the interpreter itself
    c=$("$c" -c 'import sys; assert sys.version_info[:2] == (3, 13); print(sys.executable)' 2>/dev/null) || continue
    echo "$c"
    return
  done
  echo "setup: Home Assistant needs Python 3.13 and none was found (python3.13 on PATH, pyenv's versions," >&2
  echo "setup: or HA_PYTHON=/path/to/python3.13); install one, e.g. 'pyenv install 3.13.0'" >&2
  return 1
}
homeassistant_step() {
  local py
  py=$(ha_python) || exit 1
  peer_env .venv-homeassistant requirements/homeassistant.txt "$py" "homeassistant.const, paho.mqtt, hass_frontend"
}
peers_step() {
  peer_env .venv-peers requirements/peers.txt "$PYTHON" "wyoming_faster_whisper, wyoming.client"
  peer_env .venv-peers-oww requirements/peers-oww.txt "$PYTHON" "wyoming_openwakeword.openwakeword, tflite_runtime.interpreter"
  if [ "${CUDA:-0}" = 1 ]; then  # benchmarks/peers/servers.py puts them on LD_LIBRARY_PATH for --device cuda
    "$UV" pip install --quiet --python .venv-peers/bin/python --require-hashes -r requirements/peers-cuda.txt
  fi
}
timed peers peers_step
timed homeassistant homeassistant_step

step "done in $(secs $(($(ms) - t_start))) s (${timings[*]})"
