#!/usr/bin/env bash
# Install Debian's chromium for the browser test (tests/integration/test_demo_browser.py), once.
#
# Playwright drives this system browser through `executable_path`; `playwright install` (a browser download from
# outside the package registries) is never used. Idempotent: does nothing when /usr/bin/chromium exists. Needs
# root and apt-get; otherwise, or when apt fails, it prints a note and exits 0, and the browser test fails
# saying how to install it. `make test` and .ci/run call it. On this project's machines the install took about
# 20 s (25 packages, 113 MB).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "install-chromium: note: /usr/bin/chromium is missing and this is not root with apt-get;" \
    "the browser test will fail (install it with: apt-get install --no-install-recommends chromium)" >&2
  exit 0
fi
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
}
echo "install-chromium: apt-get install chromium (for the browser test)" >&2
# A fresh machine may have no package lists yet: refresh them only when the first try fails.
if apt_install || { apt-get update -q >/dev/null && apt_install; }; then
  /usr/bin/chromium --version >&2 || true
else
  echo "install-chromium: note: apt could not install chromium; the browser test will fail" >&2
fi
