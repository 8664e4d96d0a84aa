#!/usr/bin/env bash
# Install (or update) the sensorium edge agent on a Raspberry Pi (64-bit Raspberry Pi OS / Debian).
# Idempotent: run it again to upgrade; it keeps existing keys and only replaces what changed.
#
#   sudo deploy/install-edge.sh --name kitchen-pi --config deploy.toml [--hub-key hub.key]
#                               [--source DIR|SPEC] [--no-apt] [--no-start] [--dry-run]
#
#   --name      edge node name, as in [edges.NAME] of the deployment file
#   --config    the deployment file, copied to /etc/sensorium/deploy.toml
#   --hub-key   the hub's public key (hub.key); with it the node's CURVE key pair is made in
#               /etc/sensorium/keys and its public key is printed for enrolment at the hub
#   --source    what pip installs: a checkout (default: this script's repository), whose locked
#               edge set (requirements/edge.txt, hashes checked) goes in first; or a pip
#               requirement such as 'sensorium[edge]==0.2.0' (unlocked)
#   --picamera  Raspberry Pi camera module (source = "picamera2"): apt's python3-picamera2, which the
#               venv then sees (picamera2 and libcamera are not on PyPI for the Pi)
#   --dry-run   print what would be done, change nothing
#
# Result: user "sensorium" (groups audio, video), venv /opt/sensorium/venv with sensorium[edge],
# config in /etc/sensorium, unit sensorium-edge.service enabled and started.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix=/opt/sensorium
etc=/etc/sensorium
name="" config="" hub_key="" source="" apt=1 start=1 dry=0 picamera=0

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --hub-key) hub_key="$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    --no-apt) apt=0; shift ;;
    --picamera) picamera=1; shift ;;
    --no-start) start=0; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install-edge.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
[[ -n "$name" ]] || { echo "install-edge.sh: --name NODE is required (the [edges.NODE] of the config)" >&2; exit 2; }
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "install-edge.sh: bad node name '$name'" >&2; exit 2; }
[[ -z "$config" || -f "$config" ]] || { echo "install-edge.sh: config file not found: $config" >&2; exit 2; }
[[ -z "$hub_key" || -f "$hub_key" ]] || { echo "install-edge.sh: hub key not found: $hub_key" >&2; exit 2; }
if [[ -z "$source" ]]; then source="$(cd "$here/.." && pwd)"; fi
# A checkout gets its [edge] extra; anything else is a pip requirement, e.g. 'sensorium[edge]==0.2.0'.
if [[ -d "$source" ]]; then spec="${source}[edge]"; else spec="$source"; fi

run() { if [[ $dry -eq 1 ]]; then echo "+ $*"; else "$@"; fi; }
step() { echo "== $*"; }
[[ $dry -eq 1 || $EUID -eq 0 ]] || { echo "install-edge.sh: run as root (sudo)" >&2; exit 2; }

step "system packages (PortAudio for sounddevice, venv)"
if [[ $apt -eq 1 ]] && command -v apt-get >/dev/null; then
  run apt-get install -y --no-install-recommends python3-venv python3-pip libportaudio2 libspeexdsp1 alsa-utils
  if [[ $picamera -eq 1 ]]; then run apt-get install -y --no-install-recommends python3-picamera2; fi
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "install-edge.sh: Python >= 3.11 needed (64-bit Raspberry Pi OS Bookworm has 3.11)" >&2; exit 2; }
[[ "$(uname -m)" == aarch64 || "$(uname -m)" == x86_64 ]] ||
  echo "warning: $(uname -m): only aarch64 (64-bit Pi OS) and x86_64 have wheels for every edge dependency" >&2

step "user sensorium in groups audio, video"
for g in audio video; do getent group "$g" >/dev/null || run groupadd --system "$g"; done
if ! id sensorium >/dev/null 2>&1; then
  run useradd --system --home-dir /var/lib/sensorium --create-home --shell /usr/sbin/nologin \
    --groups audio,video sensorium
else
  run usermod --append --groups audio,video sensorium
fi

step "virtual environment $prefix/venv with $spec"
venv_opts=()
[[ $picamera -eq 1 ]] && venv_opts=(--system-site-packages)
[[ -x "$prefix/venv/bin/python" ]] || run python3 -m venv "${venv_opts[@]}" "$prefix/venv"
if [[ $picamera -eq 1 && -f "$prefix/venv/pyvenv.cfg" ]]; then
  # An existing venv made without --picamera: let it see apt's picamera2 from now on.
  run sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' "$prefix/venv/pyvenv.cfg"
fi
run "$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
if [[ -d "$source" ]]; then
  # exactly the locked edge set, then the project itself on top of it
  run "$prefix/venv/bin/python" -m pip install --require-hashes -r "$source/requirements/edge.txt"
  run "$prefix/venv/bin/python" -m pip install --no-deps --upgrade "$source"
else
  run "$prefix/venv/bin/python" -m pip install --upgrade "$spec"
fi

step "configuration in $etc"
run install -d -m 0755 -o root -g sensorium "$etc"
if [[ -n "$config" ]]; then
  if [[ -f "$etc/deploy.toml" ]] && ! cmp -s "$config" "$etc/deploy.toml"; then
    run cp -p "$etc/deploy.toml" "$etc/deploy.toml.bak"
  fi
  run install -m 0640 -o root -g sensorium "$config" "$etc/deploy.toml"
fi
[[ -f "$etc/deploy.toml" || $dry -eq 1 ]] || echo "warning: no $etc/deploy.toml yet: pass --config" >&2
env_line="SENSORIUM_NODE=$name"
if [[ $dry -eq 1 ]]; then echo "+ write $etc/edge.env: $env_line"
else printf '# Written by deploy/install-edge.sh: this node is [edges.%s] of deploy.toml\n%s\n' "$name" "$env_line" >"$etc/edge.env"; fi

step "CURVE keys in $etc/keys"
run install -d -m 0700 -o sensorium -g sensorium "$etc/keys/node"
if [[ -n "$hub_key" ]]; then
  if [[ -f "$etc/keys/node/$name.key_secret" ]]; then
    echo "   keeping the existing key pair of $name"
    run install -m 0644 -o sensorium -g sensorium "$hub_key" "$etc/keys/node/hub.key"
  else
    run "$prefix/venv/bin/sensorium" keys new "$name" "$etc/keys/node" --hub-public "$hub_key"
  fi
  run chown -R sensorium:sensorium "$etc/keys/node"
  run chmod 0600 "$etc/keys/node/$name.key_secret"
  echo "   enrol this node at the hub: copy $etc/keys/node/$name.key to the hub and run"
  echo "   sensorium keys enrol $name.key --hub-dir /etc/sensorium/keys/hub   (see docs/deploy.md)"
fi

step "systemd unit sensorium-edge.service"
run install -m 0644 "$here/systemd/sensorium-edge.service" /etc/systemd/system/sensorium-edge.service
if command -v systemctl >/dev/null && [[ -d /run/systemd/system || $dry -eq 1 ]]; then
  run systemctl daemon-reload
  run systemctl enable sensorium-edge.service
  if [[ $start -eq 1 ]]; then run systemctl restart sensorium-edge.service; fi
else
  echo "   systemd is not running here: start it later with 'systemctl enable --now sensorium-edge'"
fi

step "check"
run "$prefix/venv/bin/sensorium" doctor --config "$etc/deploy.toml" --name "$name" || \
  echo "   doctor reported problems: fix them, then 'systemctl restart sensorium-edge'"
echo "done: journalctl -u sensorium-edge -f shows the agent's log"
