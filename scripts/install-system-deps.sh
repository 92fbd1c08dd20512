#!/usr/bin/env bash
# Installs the system packages a recorder needs: the same script serves CI, start.sh and Dockerfile.recorder,
# so a green CI run proves the install. Idempotent: packages already present are not fetched again.
set -euo pipefail

PACKAGES=(
  chromium            # the browser Playwright drives (/usr/bin/chromium)
  xvfb                # virtual X display the browser renders into
  pulseaudio          # per-recording null sinks
  pulseaudio-utils    # pactl, for operators debugging a worker
  ffmpeg              # capture, remux, probe, analysis
  fonts-liberation fonts-dejavu-core fonts-noto-color-emoji fonts-noto-cjk
  ca-certificates procps psmisc
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all system packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
