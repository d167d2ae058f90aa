#!/usr/bin/env bash
# Builds the release binary and the .deb for one target:
#   packaging/build-deb.sh x86_64-unknown-linux-gnu     -> runnel_<version>-1_amd64.deb
#   packaging/build-deb.sh aarch64-unknown-linux-gnu    -> runnel_<version>-1_arm64.deb
#   packaging/build-deb.sh armv7-unknown-linux-gnueabihf -> runnel_<version>-1_armhf.deb
# By default it uses Debian's cross gcc (see .cargo/config.toml); with USE_CROSS=1 it uses
# cross-rs in Docker with cross.toml. Needs cargo-deb (`cargo install cargo-deb`).
# Prints the path of the .deb on its last line.
set -euo pipefail
target=${1:?usage: packaging/build-deb.sh <target-triple>}
cd "$(dirname "$0")/.."
if [ "${USE_CROSS:-0}" = 1 ]; then
  CROSS_CONFIG=cross.toml cross build --release --locked --target "$target" >&2
else
  cargo build --release --locked --target "$target" >&2
fi
bin="target/$target/release/runnel"
echo "binary: $bin ($(stat -c %s "$bin") bytes)" >&2
mkdir -p packaging/.build
gzip -9 -n -c packaging/runnel.1 > packaging/.build/runnel.1.gz
# The release profile already strips the binary.
cargo deb --no-build --no-strip --target "$target" >&2
ls -t target/"$target"/debian/runnel_*.deb | head -n 1
