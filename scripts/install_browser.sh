#!/usr/bin/env bash
# The browser of the demo page's test (tests/apps/test_demo_page.py): Debian's `chromium`,
# driven by Playwright (pinned in requirements.txt; Playwright's own browser download is
# never used). Installed with apt-get when missing; a no-op when it is there. Where
# apt-get cannot run (not root, not Debian) it says so and that test skips, naming why.
# FACEGRAPH_CHROMIUM=/path/to/chromium uses another build and skips the install.
set -uo pipefail
if [ -n "${FACEGRAPH_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "NOTE: chromium is not installed and apt-get is not available as root here:" \
       "tests/apps/test_demo_page.py will be skipped (install Debian's chromium, or set FACEGRAPH_CHROMIUM)." >&2
  exit 0
fi
echo "== installing chromium (Debian package) for the demo page's browser test"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  echo "WARNING: apt-get could not install chromium: tests/apps/test_demo_page.py will be skipped." >&2
fi
exit 0
