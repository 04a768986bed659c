#!/usr/bin/env bash
# Installs what Handoff needs on a fresh Debian machine of this kind, idempotently:
# the PostgreSQL 15 server, Java and Maven (for the Kafka jars), Prometheus (promtool and
# the scrape test), Chromium and its driver (the coach page's browser test), a virtual
# environment with the project in editable mode, and the Kafka broker's jars.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_apt=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
[ -x /usr/bin/promtool ] || need_apt+=(prometheus)  # alert rule tests; scrape test
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # the coach page's and the console's browser tests
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} from Debian's packages"
  if [ "$(id -u)" -ne 0 ]; then
    echo "run as root, or install these yourself: ${need_apt[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
# Reinstall when dependencies or the set of packages change: the editable install maps
# each package it found, so a new package needs one.
stamp=.venv/.installed-$( (cat pyproject.toml; ls -d libs/*/ schemas/*/ services/*/*/) | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  say "installing Python packages"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

say "fetching the Kafka broker's jars (cached after the first time)"
.venv/bin/handoff dev fetch

# deploy/k8s is rendered by `kubectl kustomize`; without kubectl, kustomize itself is built
# from the Go module proxy at the version kubectl 1.32 carries (scripts/check_k8s.py).
if ! command -v kubectl >/dev/null && [ ! -x "${HANDOFF_CACHE:-$HOME/.cache/handoff}/bin/kustomize" ]; then
  say "building kustomize v5.5.0 (no kubectl on this machine)"
  GOBIN="${HANDOFF_CACHE:-$HOME/.cache/handoff}/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
fi

# The chaos suite's network faults go through toxiproxy (tests/chaos, decision 0027), built
# from the Go module proxy at a pinned version (`@latest` resolves to an old 2.5.0). `go
# install` names the binary `server`: built into a folder of its own, then named by version.
toxiproxy="${HANDOFF_CACHE:-$HOME/.cache/handoff}/bin/toxiproxy-server-2.12.0"
if [ ! -x "$toxiproxy" ]; then
  say "building toxiproxy v2.12.0 (the chaos suite's network faults)"
  gobin=$(mktemp -d)
  GOBIN="$gobin" go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0
  mkdir -p "$(dirname "$toxiproxy")"
  mv "$gobin/server" "$toxiproxy"
  rmdir "$gobin"
fi
