#!/usr/bin/env bash
# Installs what `python -m bench peers` needs besides the recorder's own dependencies: GStreamer with the
# elements of LiveKit Egress's web pipeline and attendee's GStreamer form (ximagesrc, videorate, x264enc,
# pulsesrc, mp4mux and the voaacenc AAC encoder). Idempotent: packages already present are left alone.
# Debian/Ubuntu (apt), run as root.
set -euo pipefail

packages=(
  gstreamer1.0-tools          # gst-launch-1.0
  gstreamer1.0-plugins-base   # videoconvert, videorate, audioconvert, audioresample
  gstreamer1.0-plugins-good   # mp4mux, pulsesrc (with gstreamer1.0-pulseaudio)
  gstreamer1.0-plugins-bad    # voaacenc
  gstreamer1.0-plugins-ugly   # x264enc
  gstreamer1.0-pulseaudio     # pulsesrc
  gstreamer1.0-x              # ximagesrc
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-peer-tools: everything is installed"
else
  echo "install-peer-tools: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for element in ximagesrc videorate x264enc pulsesrc mp4mux voaacenc; do
  if ! gst-inspect-1.0 "$element" >/dev/null 2>&1; then
    echo "install-peer-tools: GStreamer element $element is missing" >&2
    exit 1
  fi
done
echo "install-peer-tools: $(gst-launch-1.0 --version | head -n 1)"
