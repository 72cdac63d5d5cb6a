#!/usr/bin/env bash
# Install what pingjia needs on a fresh Debian machine, then run one job:
#   bash scripts/bootstrap.sh demo   the bridge with simulated keypads (the main job)
#   bash scripts/bootstrap.sh test   the whole test suite (what CI runs)
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"; shift || true

# Debian packages: the broker for every job; for the tests also the browser
# the status-page tests drive and a CJK font so its screenshots are readable.
want=(mosquitto)
[ "$job" = test ] && want+=(chromium fonts-wqy-microhei)
apt_pkgs=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt_pkgs+=("$p")
done
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${apt_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.pingjia-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test,stubs]"
  touch "$stamp"
fi

if [ ! -d node_modules/@micropython/micropython-webassembly-pyscript ] || [ package-lock.json -nt node_modules ]; then
  echo "bootstrap: installing MicroPython (npm ci, pinned by package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
fi

case "$job" in
  demo) exec .venv/bin/pingjia demo "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: bash scripts/bootstrap.sh demo|test [args]" >&2; exit 2 ;;
esac
