#!/usr/bin/env bash
# A throwaway PostgreSQL for the gallery's tests (tests/deployments/test_face_gallery.py),
# on a free port of 127.0.0.1, in a folder of its own (tests/postgres_server.py does the
# work). Installs Debian's `postgresql` with apt-get when it is missing and we are root.
#
#   scripts/start_test_postgres.sh install        # only make sure PostgreSQL is installed
#   eval "$(scripts/start_test_postgres.sh start DIR)"   # exports FACEGRAPH_TEST_DATABASE_URL
#   scripts/start_test_postgres.sh stop DIR
#
# The tests start their own server when FACEGRAPH_TEST_DATABASE_URL is unset, so CI only
# needs `install`; `start` lets a run share one server across pytest invocations. Where
# PostgreSQL cannot be installed or started, the PostgreSQL half of the tests skips and
# says why.
set -uo pipefail
cd "$(dirname "$0")/.."
action="${1:-install}"

installed() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }

if ! installed; then
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "NOTE: PostgreSQL is not installed and apt-get is not available as root here:" \
         "the gallery's PostgreSQL tests will be skipped (install Debian's postgresql)." >&2
    [ "$action" = install ] && exit 0 || exit 1
  fi
  echo "== installing postgresql (Debian package) for the gallery's tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }; then
    echo "WARNING: apt-get could not install postgresql: the gallery's PostgreSQL tests will be skipped." >&2
    [ "$action" = install ] && exit 0 || exit 1
  fi
fi

case "$action" in
  install) exit 0 ;;
  start)
    dsn="$(.venv/bin/python -m tests.postgres_server start "${2:?give a new folder}")" || exit 1
    echo "export FACEGRAPH_TEST_DATABASE_URL='$dsn'" ;;
  stop) exec .venv/bin/python -m tests.postgres_server stop "${2:?give the folder}" ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
