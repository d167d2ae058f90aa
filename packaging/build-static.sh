#!/usr/bin/env bash
# Builds a statically linked release binary for the container image and prints its path.
#   packaging/build-static.sh amd64|arm64|arm
# amd64 and arm64 link musl (rustup targets x86_64-unknown-linux-musl, aarch64-unknown-linux-musl;
# musl-tools and gcc-aarch64-linux-gnu from Debian). rustup offers no standard library for
# 32-bit ARM musl, so arm (v7) links glibc statically instead (armv7-unknown-linux-gnueabihf
# with crt-static; gcc-arm-linux-gnueabihf). The builds go to target/static, apart from the
# dynamically linked ones of the .deb packages.
set -euo pipefail
arch=${1:?usage: packaging/build-static.sh amd64|arm64|arm}
cd "$(dirname "$0")/.."
case "$arch" in
  amd64) target=x86_64-unknown-linux-musl ;;
  arm64) target=aarch64-unknown-linux-musl ;;
  arm) target=armv7-unknown-linux-gnueabihf ;;
  *) echo "unknown architecture $arch (amd64, arm64 or arm)" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR="$PWD/target/static"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" >&2
bin="$CARGO_TARGET_DIR/$target/release/runnel"
# A binary FROM scratch has no loader and no shared libraries to find.
if file -b "$bin" | grep -q 'dynamically linked'; then
  echo "$bin is not statically linked: $(file -b "$bin")" >&2
  exit 1
fi
echo "$bin"
