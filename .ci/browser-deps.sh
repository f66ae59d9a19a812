#!/usr/bin/env bash
# Installs what tests/browser.rs drives when it is missing: Debian's chromium (headless), its
# chromedriver (chromium-driver) and a CJK font (the pages are in Chinese). Idempotent: prints
# what is already there and installs nothing then. Run as root or with sudo available.
# CI runs it, then the tests with SLOTD_REQUIRE_BROWSER=1 so a missing browser fails the run.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# fc-list answers only once fontconfig is installed (chromium brings it).
if ! { command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh | grep -q .; }; then
  missing+=(fonts-wqy-zenhei)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "browser-deps: $(/usr/bin/chromium --version 2>/dev/null || echo chromium), $(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2) and a CJK font are installed"
  exit 0
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "browser-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "browser-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
/usr/bin/chromium --version
/usr/bin/chromedriver --version
