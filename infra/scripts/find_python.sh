#!/usr/bin/env bash
# Prints the path of a Python 3.13 interpreter: $PYTHON, python3.13 on PATH, pyenv, or the usual places.
set -u
want="3.13"
ok() { [ -n "$1" ] && "$1" -c "import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else 1)" >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=("$(command -v python3.13 2>/dev/null || true)")
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null)
  for d in "$root"/versions/${want}*; do candidates+=("$d/bin/python3.13"); done
fi
for d in "$HOME"/.pyenv/versions/${want}*; do candidates+=("$d/bin/python3.13"); done
candidates+=(/usr/bin/python3.13 /usr/local/bin/python3.13 "$(command -v python3 2>/dev/null || true)")
for c in "${candidates[@]}"; do
  if ok "$c"; then echo "$c"; exit 0; fi
done
cat >&2 <<MSG
error: Python $want is required (the Lambda runtime is python3.13) and none was found.
Install it, then run the command again:
  Debian/Ubuntu:  apt-get install python3.13 python3.13-venv   (or: pyenv install $want)
  macOS:          brew install python@$want
Or point PYTHON at it:  make test PYTHON=/path/to/python3.13
MSG
exit 1
