#!/usr/bin/env bash
# Installs the Debian packages vigil's tests and demo need, only those missing:
# Java 17 + Maven (the embedded Apache Kafka broker), GStreamer's RTSP server for the system python3
# (the test RTSP camera), FFmpeg-capable GStreamer plugins, and chromium for the console's browser tests
# (Playwright drives Debian's build: it cannot download its own here; ~400 MB, so only when missing).
# Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

packages=(
  openjdk-17-jre-headless maven
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  chromium
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# Java may come from elsewhere (a JDK in PATH): only its absence makes the package necessary.
if command -v java >/dev/null 2>&1; then
  missing=("${missing[@]/openjdk-17-jre-headless/}")
fi
if command -v mvn >/dev/null 2>&1; then
  missing=("${missing[@]/maven/}")
fi
read -r -a missing <<<"${missing[*]}"

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
