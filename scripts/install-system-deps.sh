#!/usr/bin/env bash
# Installs the system packages a recorder needs: the same script serves CI, start.sh and Dockerfile.recorder,
# so a green CI run proves the install. Idempotent: packages already present are not fetched again.
#
# Supported: Debian 12 (bookworm), whose `chromium` is a real package. Ubuntu's chromium is a snap (the deb is
# only a wrapper that installs it), which does not run in containers or CI: on Ubuntu this script installs
# everything else only when CHROMIUM_PATH names a Chromium that is not a snap, and stops otherwise.
set -euo pipefail

PACKAGES=(
  chromium            # the browser Playwright drives (/usr/bin/chromium)
  xvfb                # virtual X display the browser renders into
  x11-xserver-utils   # xrandr: the display's mode at the capture rate (recorder/source/display.py)
  libxcb1             # the grab paced by the page talks to the display through it (xcffib)
  libyuv0             # the grab converts each picture to I420 with it (recorder/capture/grabber.py)
  pulseaudio          # per-recording null sinks
  pulseaudio-utils    # pactl, for operators debugging a worker
  ffmpeg              # capture, remux, probe, analysis
  fonts-liberation fonts-dejavu-core fonts-noto-color-emoji fonts-noto-cjk
  ca-certificates procps psmisc
  util-linux passwd   # setpriv and useradd: Chromium runs as an unprivileged user under a root worker
  libatomic1          # the Node.js driver inside Playwright's wheel links it (a minimal Debian lacks it)
)
# The PostgreSQL store's tests start a private server of their own (tests/support/postgres.py: initdb and
# postgres as the `postgres` user this package creates). A machine or image that runs no tests leaves it
# out with INSTALL_TEST_SERVERS=0.
if [ "${INSTALL_TEST_SERVERS:-1}" != 0 ]; then
  PACKAGES+=(postgresql)
fi

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

# Which system this is; OS_RELEASE_FILE only lets tests ask about another one.
OS_RELEASE="${OS_RELEASE_FILE:-/etc/os-release}"
os_id="$( . "$OS_RELEASE" 2>/dev/null && echo "${ID:-unknown}" || echo unknown)"
os_like="$( . "$OS_RELEASE" 2>/dev/null && echo "${ID_LIKE:-}" || true)"
if [ "$os_id" = ubuntu ] || [[ " $os_like " == *" ubuntu "* ]]; then
  chromium="${CHROMIUM_PATH:-}"
  snap_wrapper=false  # Ubuntu's /usr/bin/chromium-browser: a shell script that runs the snap
  if [ -f "$chromium" ] && [ "$(head -c 2 "$chromium")" = "#!" ] && grep -q snap "$chromium"; then snap_wrapper=true; fi
  if [ -z "$chromium" ] || [ ! -x "$chromium" ] || [[ "$(readlink -f "$chromium")" == /snap/* ]] || $snap_wrapper; then
    cat >&2 <<'MSG'
install-system-deps: Ubuntu's chromium package installs a snap, which does not run in containers or CI.
  Supported is Debian 12 (bookworm). On Ubuntu, either run the recorder in its image (Dockerfile.recorder,
  scripts/build-image.sh), or install a Chromium that is not a snap and set CHROMIUM_PATH to it; this script
  then installs everything else.
MSG
    exit 2
  fi
  echo "install-system-deps: Ubuntu; using the Chromium at $chromium (CHROMIUM_PATH)"
  PACKAGES=("${PACKAGES[@]/chromium/}")
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: needs Debian 12 (apt-get not found); see README.md" >&2
  exit 2
fi

missing=()
for p in "${PACKAGES[@]}"; do
  [ -n "$p" ] || continue
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
