#!/usr/bin/env bash
# Builds Dockerfile.recorder into one image for both roles (recorder worker, orchestrator serve).
#
#   scripts/build-image.sh [--tag NAME] [--fresh-base]
#
# With a Docker engine it runs `docker build`. Without one (as on the CI machines) it uses podman from Debian's
# packages, installed here if missing, with `--isolation chroot`: the build runs its steps in a chroot, so
# it needs no container runtime, no user namespaces and no daemon. Where no registry can be reached, the
# base image is made locally with debootstrap and handed to the Dockerfile as its BASE build argument, so
# the Dockerfile keeps `debian:bookworm-slim` for everyone else. That base is kept as an image named by
# the day it was made and reused all that day; --fresh-base makes a new one at once.
#
# Settings (environment): IMAGE (the tag, default localhost/recorder-farm:dev), DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR (where debootstrap and the image's apt fetch from).
# Prints the image size and the build time last; exits non-zero with a line saying what failed.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/recorder-farm:dev}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
REGISTRY_BASE="docker.io/library/debian:bookworm-slim"
LOCAL_BASE_REPO="localhost/recorder-farm-base"
FRESH_BASE=false

fail() {
  echo "build-image: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || fail "--tag needs a name, e.g. --tag localhost/recorder-farm:dev"; IMAGE="$2"; shift 2 ;;
    --fresh-base) FRESH_BASE=true; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1' (known: --tag NAME, --fresh-base)" ;;
  esac
done

started=$(date +%s)

report() {  # $1: the image's size in bytes
  local elapsed=$(( $(date +%s) - started ))
  echo "build-image: image $IMAGE"
  echo "build-image: size $(( $1 / 1024 / 1024 )) MiB ($1 bytes)"
  echo "build-image: built in ${elapsed} s"
}

# -- with a Docker engine -------------------------------------------------------------------------------

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "build-image: using the Docker engine"
  docker build -f Dockerfile.recorder -t "$IMAGE" . || fail "docker build of Dockerfile.recorder failed (its output is above)"
  report "$(docker image inspect --format '{{.Size}}' "$IMAGE")"
  exit 0
fi

# -- with podman --------------------------------------------------------------------------------------

install_tools() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || fail "no Docker engine, and ${missing[*]} missing: run as root to install them"
    sudo="sudo"
  fi
  echo "build-image: no Docker engine; installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || fail "apt-get update failed: check the machine's apt sources"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || fail "apt-get install ${missing[*]} failed (its output is above)"
}

install_tools
[ "$(id -u)" -eq 0 ] || fail "podman builds need root here (the build runs its steps in a chroot): run with sudo"

# podman's own storage driver is overlay, which shares each layer's files with the next. Where podman cannot
# open its store (a machine whose own root is an overlay that cannot be nested, say), the script stops and says
# how to switch to vfs: it never rewrites the machine's podman configuration, which other images may depend on.
if ! podman info >/dev/null 2>&1; then
  fail "podman cannot open its store: $(podman info 2>&1 | tail -1). Where the kernel cannot mount overlay,\
 put driver = \"vfs\" under [storage] in /etc/containers/storage.conf (a new store: vfs copies every layer whole)\
 and run this again"
fi
echo "build-image: using podman $(podman --version | awk '{print $3}'), storage driver \
$(podman info --format '{{.Store.GraphDriverName}}')"

# debootstrap mounts /proc and /sys in its target and leaves them there when it dies: those are unmounted
# (deepest first) before the folder goes, and the removal never crosses into another filesystem.
discard_base_folder() {  # $1: the work folder
  awk -v top="$1/" 'index($2, top) == 1 {print $2}' /proc/mounts | sort -r | while read -r mounted; do
    umount -l "$mounted" 2>/dev/null || true
  done
  rm -rf --one-file-system "$1"
}

# A minimal Debian made with debootstrap, trimmed as debian:bookworm-slim is, imported as an image.
make_local_base() {  # $1: the image name to give it
  local work
  work=$(mktemp -d /var/tmp/recorder-farm-base.XXXXXX)
  # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
  trap "discard_base_folder '$work'" EXIT
  echo "build-image: no registry reachable; making the base with debootstrap from $DEBIAN_MIRROR"
  debootstrap --variant=minbase bookworm "$work/root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || fail "debootstrap bookworm from $DEBIAN_MIRROR failed: $(tail -3 "$work/debootstrap.log" | tr '\n' ' ')\
(set DEBIAN_MIRROR to a reachable Debian mirror)"
  # What the slim image leaves out of every package installed later: manuals, docs and translations.
  cat >"$work/root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
EOF
  rm -f "$work/root/etc/apt/sources.list"
  cat >"$work/root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $DEBIAN_SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/* "$work"/root/var/log/*.log
  tar -C "$work/root" --numeric-owner -c . | podman import --quiet - "$1" >/dev/null \
    || fail "podman import of the debootstrap base failed"
  rm -rf "$work"
  trap - EXIT
}

if podman image exists "$REGISTRY_BASE" || timeout 120 podman pull --quiet "$REGISTRY_BASE" >/dev/null 2>&1; then
  base="$REGISTRY_BASE"
  echo "build-image: base $base"
else
  base="$LOCAL_BASE_REPO:bookworm-$(date -u +%Y%m%d)"
  if $FRESH_BASE || ! podman image exists "$base"; then
    base_started=$(date +%s)
    superseded=$(podman image inspect --format '{{.Id}}' "$base" 2>/dev/null || true)
    make_local_base "$base"
    [ -z "$superseded" ] || podman rmi "$superseded" >/dev/null 2>&1 || true
    echo "build-image: base $base made in $(( $(date +%s) - base_started )) s"
  else
    echo "build-image: base $base (made earlier today; --fresh-base makes a new one)"
  fi
  # Bases of earlier days are superseded by this one.
  for old in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$LOCAL_BASE_REPO"); do
    [ "$old" = "$base" ] || podman rmi "$old" >/dev/null 2>&1 || true
  done
fi

# pip inside the build trusts what this machine trusts: a machine whose HTTPS goes through an inspecting
# proxy has its CA in this bundle, and Debian's bundle in the image does not. Mounted for the build only.
host_ca=(/etc/ssl/certs/ca-certificates.crt)
if [ -r "${host_ca[0]}" ]; then
  host_ca=(--volume "${host_ca[0]}:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
else
  host_ca=()
fi
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --isolation chroot --network host --pull=never --build-arg "BASE=$base" "${host_ca[@]}" \
  -f Dockerfile.recorder -t "$IMAGE" . \
  || fail "podman build of Dockerfile.recorder failed (its output is above)"
# The image this tag named before is superseded; its layers the new one shares stay.
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
report "$(podman image inspect --format '{{.Size}}' "$IMAGE")"
