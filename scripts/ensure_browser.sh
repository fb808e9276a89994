#!/usr/bin/env bash
# The web console's tests (tests/test_console_browser.py) drive a real headless Chromium through
# Selenium, with Debian's chromedriver (Selenium is given both paths, so it never downloads a
# driver). Installed here when missing (as root); elsewhere those tests are skipped and say why,
# and this says how to install them.
set -euo pipefail
PACKAGES=(chromium chromium-driver)   # Debian 12: /usr/bin/chromium and /usr/bin/chromedriver

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: the web console's browser tests will be skipped: they need ${PACKAGES[*]} (Debian)" >&2
  exit 0
fi
echo "installing chromium and chromium-driver from Debian for the web console's browser tests"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
