#!/usr/bin/env sh
# Print the path of a working `uv`, installing it with pip when it is missing.
# Works on a fresh Debian/Ubuntu with only python3 (PEP 668 "externally managed" included).
set -eu
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
PY="${PYTHON:-python3}"
BOOT=".bootstrap"
if [ -x "$BOOT/bin/uv" ]; then echo "$BOOT/bin/uv"; exit 0; fi
if "$PY" -m pip --version >/dev/null 2>&1 && "$PY" -m pip install --quiet --user uv >/dev/null 2>&1; then
  USER_BIN="$("$PY" -c 'import site, os; print(os.path.join(site.USER_BASE, "bin"))')"
  if [ -x "$USER_BIN/uv" ]; then echo "$USER_BIN/uv"; exit 0; fi
fi
# Externally managed or no user site: a private bootstrap venv holds uv.
"$PY" -m venv "$BOOT" >&2 || { echo "need python3-venv: apt-get install python3-venv" >&2; exit 1; }
"$BOOT/bin/pip" install --quiet uv >&2
echo "$BOOT/bin/uv"
