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
  util-linux passwd   # setpriv and useradd: Chromium runs as an unprivileged user under a root worker
)

# The unprivileged user Chromium runs as when the recorder itself runs as root (the local pool, CI), so
# that Chromium's sandbox can work there; see recorder/source/sandbox.py. A system user with no home, no
# shell, no password and a group of its own. The image's worker is already unprivileged and does not use it.
BROWSER_USER="${RECORDER_BROWSER_USER:-recorder-browser}"
ensure_browser_user() {
  getent passwd "$BROWSER_USER" >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: run as root to create the user $BROWSER_USER (only needed for root workers)" >&2
    return 0
  fi
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --comment "recorder farm Chromium" "$BROWSER_USER"
  echo "install-system-deps: created user $BROWSER_USER"
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all system packages present"
  ensure_browser_user
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
ensure_browser_user
