#!/usr/bin/env bash
# The browser tests drive the system's Chromium (no browser download): say how to get it when it is missing.
set -u
browser="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$browser" ]; then
  cat >&2 <<MSG
error: the browser tests need Chromium at $browser and it is not installed.
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y chromium
  elsewhere:      install Chromium and run: make test CHROMIUM_PATH=/path/to/chromium
MSG
  exit 1
fi
