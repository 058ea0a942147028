#!/usr/bin/env bash
# Install everything regimetry-stream needs on a fresh Debian machine with Python >= 3.11.
#   bash scripts/setup.sh            trainer + worker + test tools (default)
#   EXTRAS=worker,dev bash scripts/setup.sh   serving only: no TensorFlow
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-worker,archive,train,dev}"
PY="${PYTHON:-python3}"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# redis-cli (Debian's redis-tools, a dependency of redis-server) joins the test Redis Cluster (--cluster create)
command -v redis-cli    >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v prometheus   >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The Debian packages start their own daemons on the default ports; the project runs its own on free ports.
for svc in redis-server prometheus; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || service "$svc" stop >/dev/null 2>&1 || true
done

# constraints.txt pins the numeric and training stack to the versions the committed results were made with;
# CONSTRAINTS= (empty) installs the newest releases within pyproject.toml's ranges instead.
CONSTRAINTS="${CONSTRAINTS-constraints.txt}"
pin=()
[ -n "$CONSTRAINTS" ] && pin=(-c "$CONSTRAINTS")
echo "setup: pip install -e .[$EXTRAS] ${pin[*]}"
"$PY" -m pip install --quiet --disable-pip-version-check "${pin[@]}" -e ".[$EXTRAS]"
echo "setup: done"
