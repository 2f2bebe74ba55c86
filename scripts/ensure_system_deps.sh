#!/usr/bin/env bash
# Open3D needs Debian's libusb-1.0-0. Install it when missing and apt is usable; otherwise say how.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=""; fi
  fi
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "racestack: installing libusb-1.0-0 (needed by open3d)"
    $SUDO apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libusb-1.0-0 >/dev/null; }
    exit 0
  fi
fi
echo "racestack: libusb-1.0-0 is missing and cannot be installed here (no root/apt)." >&2
echo "           Install it yourself, e.g. 'sudo apt-get install libusb-1.0-0', then re-run make." >&2
exit 1
