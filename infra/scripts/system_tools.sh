#!/usr/bin/env bash
# What `make test` needs from the system rather than from PyPI: `chromium` (the browser tests drive the system's
# Chromium; no browser download) and `npm` (Node.js and npm for the IAM policy simulator). Present: nothing to do.
# Missing: installed from Debian's packages when this user may (root, or sudo without a password prompt), without a
# question asked; otherwise the exact command to run is printed and the step fails. CI (.ci/run) takes this path too.
set -u

tool="${1:-}"
debian_chromium="${DEBIAN_CHROMIUM:-/usr/bin/chromium}"  # where Debian's package puts it (tests move it)
browser="${CHROMIUM_PATH:-$debian_chromium}"
# A shared library the dynamic loader knows (ldconfig is in /sbin, off a user's PATH on Debian).
has_library() { "$(command -v ldconfig || echo /sbin/ldconfig)" -p 2>/dev/null | grep -q "[[:space:]]$1 "; }
case "$tool" in
  chromium)
    # Playwright drives Chromium through its own Node.js driver, which needs libatomic (not a dependency of
    # Debian's chromium, nor on a minimal Debian).
    packages="chromium libatomic1"
    purpose="the browser tests need Chromium at $browser and libatomic.so.1"
    present() { [ -x "$browser" ] && has_library libatomic.so.1; }
    if [ "$browser" != "$debian_chromium" ] && ! [ -x "$browser" ]; then
      echo "error: CHROMIUM_PATH=$browser: no Chromium there. Point it at one, or unset it to use Debian's." >&2
      exit 1
    fi
    ;;
  npm)
    packages="nodejs npm"
    purpose="the IAM policy tests need Node.js and npm"
    present() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }
    ;;
  *)
    echo "usage: $0 chromium|npm" >&2
    exit 2
    ;;
esac

present && exit 0

install="apt-get install -y --no-install-recommends $packages"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: $purpose, and this system has no apt-get to install Debian's $packages from." >&2
  echo "  Install $packages with this system's package manager, then run the command again." >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  if command -v sudo >/dev/null 2>&1; then
    command="sudo apt-get update && sudo $install"
  else
    command="su -c 'apt-get update && $install'"
  fi
  cat >&2 <<MSG
error: $purpose; installing Debian's $packages needs root (or sudo without a password prompt). Run:
  $command
then run the command again.
MSG
  exit 1
fi

echo "$tool: $purpose: installing Debian's $packages"
if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive $install -q; }; then
  echo "error: apt-get could not install $packages (see above); $purpose." >&2
  exit 1
fi
if ! present; then
  echo "error: Debian's $packages is installed, yet $purpose: it is not where it should be." >&2
  exit 1
fi
