#!/usr/bin/env bash
# Renders an HTML page (such as one from `newstag::infer::html::render_page`) to a PNG in
# headless Chromium, and fails if the page wrote anything to the browser console (an uncaught
# error, a console.error, ...): newstag's pages need no JavaScript, so any console output is a bug.
#
# Usage: scripts/screenshot.sh PAGE.html OUT.png
# Needs Debian's `chromium` (apt-get update && apt-get install -y chromium); $CHROMIUM overrides.
# Exit status: 0 rendered cleanly, 1 console output or rendering failed, 2 usage error.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 PAGE.html OUT.png" >&2
  exit 2
fi
if [[ ! -f $1 ]]; then
  echo "$0: no such page: $1" >&2
  exit 2
fi
chromium=${CHROMIUM:-chromium}
if ! command -v "$chromium" >/dev/null; then
  echo "$0: $chromium not found; install it: apt-get update && apt-get install -y chromium" >&2
  exit 2
fi
page=$(realpath -- "$1")
out=$(realpath -m -- "$2")

profile=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf -- "$profile" "$log"' EXIT
rm -f -- "$out"

# Console messages of every level are logged to stderr as "...:INFO:CONSOLE..." lines
# ("CONSOLE(line)" in older versions).
status=0
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1280,2000 --enable-logging=stderr --v=0 \
  --screenshot="$out" "$page" >/dev/null 2>"$log" || status=$?
if [[ $status -ne 0 || ! -s $out ]]; then
  cat "$log" >&2
  echo "$0: chromium failed (status $status) to render $page" >&2
  exit 1
fi
if grep -E ':CONSOLE[:(]|Uncaught' "$log" >&2; then
  echo "$0: $page wrote to the console (above); screenshot in $out" >&2
  exit 1
fi
echo "screenshot: $out"
