#!/usr/bin/env bash
# Make debian:bookworm-slim locally, for machines that cannot pull from a container registry: debootstrap's
# minimal Debian bookworm from Debian's archive, without documentation, locales, apt's lists or the .deb files
# it installed, imported into podman as docker.io/library/debian:bookworm-slim (the name the Containerfile's
# short name resolves to), so the same Containerfile builds unchanged.
#
#   scripts/local-base-image.sh [--engine podman|docker]
#
# The root filesystem is kept as a tarball in $DIFFIR_IMAGE_CACHE (default ~/.cache/diffir/image-wheels, beside
# the wheels) and reused; an image already there is kept. Needs root and debootstrap (apt-get install
# debootstrap).
set -euo pipefail
ENGINE=podman
[ "${1:-}" = --engine ] && ENGINE="$2"
NAME=docker.io/library/debian:bookworm-slim
if "$ENGINE" image exists "$NAME" 2>/dev/null || "$ENGINE" image inspect "$NAME" >/dev/null 2>&1; then
  echo "$NAME (already there)"
  exit 0
fi
CACHE="${DIFFIR_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/diffir/image-wheels}"
TAR="$CACHE/debian-bookworm-minbase.tar"
mkdir -p "$CACHE"
if [ ! -s "$TAR" ]; then
  MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  DIR=$(mktemp -d)
  trap 'rm -rf "$DIR"' EXIT
  debootstrap --variant=minbase bookworm "$DIR" "$MIRROR" >"$DIR.log" 2>&1 || { cat "$DIR.log" >&2; exit 1; }
  rm -f "$DIR.log"
  rm -rf "$DIR"/usr/share/doc/* "$DIR"/usr/share/man/* "$DIR"/usr/share/locale/* "$DIR"/usr/share/info/* \
    "$DIR"/var/cache/apt/*.bin "$DIR"/var/cache/apt/archives/*.deb "$DIR"/var/lib/apt/lists/* "$DIR"/var/log/*
  # As Debian's slim images do: later installs leave documentation and translations out too.
  cat > "$DIR/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
CFG
  tar -C "$DIR" -cf "$TAR.part" . && mv "$TAR.part" "$TAR"
fi
"$ENGINE" import "$TAR" "$NAME" >&2
echo "$NAME"
