#!/usr/bin/env bash
# Builds runnel's container image with podman, FROM scratch around a static binary, for
# amd64, arm64 and arm/v7 (or the architectures named): tags each as runnel:<version>-<arch>
# and saves it as target/image/runnel-<version>-<arch>.tar, which `docker load -i` or
# `podman load -i` reads on the machine that runs it (docs/deploy.md).
#   packaging/build-image.sh [amd64] [arm64] [arm]
# Nothing runs inside the image while it is built, so no emulation is needed here.
set -euo pipefail
cd "$(dirname "$0")/.."
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 arm)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
homepage=$(sed -n 's/^homepage = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp packaging/image/runnel.toml "$ctx/"
mkdir "$ctx/data"

mkdir -p target/image
for arch in "${arches[@]}"; do
  case "$arch" in
    amd64) platform=linux/amd64 ;;
    arm64) platform=linux/arm64 ;;
    arm) platform=linux/arm/v7 ;;
    *) echo "unknown architecture $arch (amd64, arm64 or arm)" >&2; exit 2 ;;
  esac
  bin=$(packaging/build-static.sh "$arch")
  mkdir -p "$ctx/$arch"
  cp "$bin" "$ctx/$arch/runnel"
  # The docker format keeps HEALTHCHECK, which the OCI image format has no field for.
  podman build --quiet --format docker --platform "$platform" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg CREATED="$created" --build-arg HOMEPAGE="$homepage" \
    -t "runnel:$version-$arch" -f packaging/Containerfile "$ctx" >/dev/null
  archive="target/image/runnel-$version-$arch.tar"
  rm -f "$archive"
  podman save --quiet --format docker-archive -o "$archive" "runnel:$version-$arch"
  size=$(podman image inspect --format '{{.Size}}' "runnel:$version-$arch")
  echo "runnel:$version-$arch ($platform): image $size bytes, binary $(stat -c %s "$bin") bytes," \
    "$archive $(gzip -c "$archive" | wc -c) bytes gzipped"
done
