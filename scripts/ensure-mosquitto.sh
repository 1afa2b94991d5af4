#!/usr/bin/env sh
# Make sure the Mosquitto broker binary is installed (Debian/Ubuntu package `mosquitto`).
# The tests start their own Mosquitto on free loopback ports; nothing is left running.
set -eu
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "mosquitto is missing and this user cannot install it: apt-get install mosquitto" >&2
  exit 1
fi
echo "installing mosquitto (Debian package) ..." >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mosquitto >&2
