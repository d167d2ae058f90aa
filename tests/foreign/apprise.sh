#!/usr/bin/env bash
# Apprise, installed from PyPI into a virtual environment under target/ (made here when it is
# missing; delete it for a fresh install), notifies through the ntfy API of the hub (the debug
# build unless HUB_BIN says otherwise): tests/foreign/apprise_ntfy.py. Needs python3 with venv
# (Debian: python3-venv). Fails, never skips, when something is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
export HUB_BIN="${HUB_BIN:-$target/debug/runnel}"
venv="${APPRISE_VENV:-$target/apprise-venv}"
if [ ! -x "$venv/bin/apprise" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check apprise
fi
"$venv/bin/python" -c 'import apprise; print("apprise", apprise.__version__)'
"$venv/bin/python" tests/foreign/apprise_ntfy.py
