#!/usr/bin/env bash
# Install (or update) sensorium workers, and optionally the hub, in a container or on one box.
# Idempotent: run it again to upgrade or to add a worker; existing keys and state are kept.
#
#   sudo deploy/install-worker.sh --name gpu0 [--name cpu0 …] --config deploy.toml
#        [--hub] [--hub-key hub.key] [--extras workers,tts] [--torch-index URL]
#        [--source DIR|SPEC] [--no-apt] [--no-start] [--dry-run]
#
#   --name        worker name, as in [workers.NAME]; one sensorium-worker@NAME unit each
#   --hub         also install the hub (sensorium-hub.service) and make its key pair if missing
#   --hub-key     the hub's public key: make this worker's CURVE key pair (a remote worker)
#   --extras      extras to install (default: workers; add tts, bridges, cuda as needed)
#   --torch-index with a pip requirement as --source only: extra index for torch, e.g.
#                 https://download.pytorch.org/whl/cpu on a CPU box (a checkout installs uv.lock's torch)
#   --source      a checkout (default: this script's repository): installs exactly uv.lock with uv;
#                 or a pip requirement such as 'sensorium[workers]==0.2.0' (unlocked, pip)
#   --dry-run     print what would be done, change nothing
#
# Result: user "sensorium", venv /opt/sensorium/venv, config in /etc/sensorium, state in
# /var/lib/sensorium, units enabled and started (hub first, then workers).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix=/opt/sensorium
etc=/etc/sensorium
names=() config="" hub=0 hub_key="" extras="workers" torch_index="" source="" apt=1 start=1 dry=0

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) names+=("$2"); shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --hub) hub=1; shift ;;
    --hub-key) hub_key="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --torch-index) torch_index="$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    --no-apt) apt=0; shift ;;
    --no-start) start=0; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install-worker.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
[[ ${#names[@]} -gt 0 || $hub -eq 1 ]] || { echo "install-worker.sh: give --name WORKER and/or --hub" >&2; exit 2; }
for n in "${names[@]}"; do
  [[ "$n" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "install-worker.sh: bad worker name '$n'" >&2; exit 2; }
done
[[ -z "$config" || -f "$config" ]] || { echo "install-worker.sh: config file not found: $config" >&2; exit 2; }
[[ -z "$hub_key" || -f "$hub_key" ]] || { echo "install-worker.sh: hub key not found: $hub_key" >&2; exit 2; }
if [[ -z "$source" ]]; then source="$(cd "$here/.." && pwd)"; fi
if [[ -d "$source" ]]; then spec="${source}[$extras]"; else spec="$source"; fi

run() { if [[ $dry -eq 1 ]]; then echo "+ $*"; else "$@"; fi; }
step() { echo "== $*"; }
[[ $dry -eq 1 || $EUID -eq 0 ]] || { echo "install-worker.sh: run as root (sudo)" >&2; exit 2; }

step "system packages"
if [[ $apt -eq 1 ]] && command -v apt-get >/dev/null; then
  # flite / espeak-ng: the non-GPL TTS voices; ffmpeg for media files; PortAudio for sounddevice.
  run apt-get install -y --no-install-recommends python3-venv python3-pip libportaudio2 ffmpeg flite espeak-ng
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "install-worker.sh: Python >= 3.11 needed" >&2; exit 2; }
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader | sed 's/^/   GPU /'
else
  echo "   no nvidia-smi: workers here run on the CPU (or pass the GPU through, docs/deploy.md)"
fi

step "user sensorium"
getent group video >/dev/null || run groupadd --system video
if ! id sensorium >/dev/null 2>&1; then
  run useradd --system --home-dir /var/lib/sensorium --create-home --shell /usr/sbin/nologin --groups video sensorium
else
  run usermod --append --groups video sensorium
fi

step "virtual environment $prefix/venv with $spec"
if [[ -d "$source" ]]; then
  # The locked set, installed by the pinned uv (verified by hash); the same packages CI tested.
  if [[ ! -x "$prefix/tools/bin/uv" ]]; then
    run python3 -m pip install --quiet --require-hashes --target "$prefix/tools" -r "$source/requirements/uv.txt"
  fi
  uv_extras=()
  IFS=, read -ra wanted <<<"$extras"
  for e in "${wanted[@]}"; do uv_extras+=(--extra "$e"); done
  run env UV_PROJECT_ENVIRONMENT="$prefix/venv" UV_PYTHON_DOWNLOADS=never "$prefix/tools/bin/uv" sync \
    --project "$source" --locked --no-dev --no-editable --python python3 "${uv_extras[@]}"
else
  echo "   warning: a pip requirement is not locked; a checkout installs exactly uv.lock" >&2
  [[ -x "$prefix/venv/bin/python" ]] || run python3 -m venv "$prefix/venv"
  run "$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
  pip_extra=()
  [[ -n "$torch_index" ]] && pip_extra=(--extra-index-url "$torch_index")
  run "$prefix/venv/bin/python" -m pip install --upgrade "${pip_extra[@]}" "$spec"
fi

step "configuration in $etc, state in /var/lib/sensorium"
run install -d -m 0755 -o root -g sensorium "$etc"
run install -d -m 0700 -o sensorium -g sensorium /var/lib/sensorium
if [[ -n "$config" ]]; then
  if [[ -f "$etc/deploy.toml" ]] && ! cmp -s "$config" "$etc/deploy.toml"; then
    run cp -p "$etc/deploy.toml" "$etc/deploy.toml.bak"
  fi
  run install -m 0640 -o root -g sensorium "$config" "$etc/deploy.toml"
fi

step "CURVE keys"
if [[ $hub -eq 1 ]]; then
  run install -d -m 0700 -o sensorium -g sensorium "$etc/keys/hub"
  if [[ -f "$etc/keys/hub/hub.key_secret" ]]; then
    echo "   keeping the hub's existing key pair"
  else
    run "$prefix/venv/bin/sensorium" keys init-hub "$etc/keys/hub"
  fi
  run chown -R sensorium:sensorium "$etc/keys/hub"
  echo "   the hub's public key to copy to every node: $etc/keys/hub/hub.key"
fi
if [[ -n "$hub_key" ]]; then
  run install -d -m 0700 -o sensorium -g sensorium "$etc/keys/node"
  for n in "${names[@]}"; do
    if [[ -f "$etc/keys/node/$n.key_secret" ]]; then
      echo "   keeping the existing key pair of $n"
      run install -m 0644 -o sensorium -g sensorium "$hub_key" "$etc/keys/node/hub.key"
    else
      run "$prefix/venv/bin/sensorium" keys new "$n" "$etc/keys/node" --hub-public "$hub_key"
    fi
    echo "   enrol $n at the hub: copy $etc/keys/node/$n.key there and run: sensorium keys enrol $n.key --hub-dir /etc/sensorium/keys/hub"
  done
  run chown -R sensorium:sensorium "$etc/keys/node"
fi

step "systemd units"
units=()
if [[ $hub -eq 1 ]]; then
  run install -m 0644 "$here/systemd/sensorium-hub.service" /etc/systemd/system/sensorium-hub.service
  units+=(sensorium-hub.service)
fi
if [[ ${#names[@]} -gt 0 ]]; then
  run install -m 0644 "$here/systemd/sensorium-worker@.service" /etc/systemd/system/sensorium-worker@.service
  for n in "${names[@]}"; do units+=("sensorium-worker@$n.service"); done
fi
if command -v systemctl >/dev/null && [[ -d /run/systemd/system || $dry -eq 1 ]]; then
  run systemctl daemon-reload
  run systemctl enable "${units[@]}"
  # Units order themselves (hub → workers); restart picks up a new version or config.
  if [[ $start -eq 1 ]]; then run systemctl restart "${units[@]}"; fi
else
  echo "   systemd is not running here: later run 'systemctl enable --now ${units[*]}'"
fi

step "check"
for n in "${names[@]}"; do
  run "$prefix/venv/bin/sensorium" doctor --config "$etc/deploy.toml" --name "$n" ||
    echo "   doctor reported problems for $n: fix them, then 'systemctl restart sensorium-worker@$n'"
done
echo "done: journalctl -u 'sensorium-*' -f shows the logs"
