#!/usr/bin/env bash
# Installs the Debian packages vigil's tests and demo need, only those missing:
# Java 17 + Maven (the embedded Apache Kafka broker), GStreamer's RTSP server for the system python3
# (the test RTSP camera), FFmpeg-capable GStreamer plugins, Prometheus for its `promtool` (the tests
# check deploy/prometheus/ rules and every process's /metrics with it), and chromium for the console's
# browser tests (Playwright drives Debian's build: it cannot download its own here; ~400 MB, so only
# when missing). Needs root (or sudo) on Debian/Ubuntu.
#   deploy/install-system-deps.sh          what the demo needs (Java, Maven, GStreamer)
#   deploy/install-system-deps.sh --test   also promtool and chromium, for `make test`
set -euo pipefail

packages=(
  openjdk-17-jre-headless maven
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
)
if [ "${1:-}" = "--test" ]; then
  packages+=(prometheus chromium)
fi

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
# Only promtool is needed; a promtool in PATH (e.g. from a Prometheus release) will do.
if command -v promtool >/dev/null 2>&1; then
  missing=("${missing[@]/prometheus/}")
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
# The prometheus package also ships a server and enables its service: policy-rc.d (Debian's switch
# for maintainer scripts) keeps it from being started by this install; one already there is kept.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
