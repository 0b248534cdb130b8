#!/usr/bin/env bash
# Installs what building and testing Aloha-rs needs on a Debian machine, as root, skipping
# whatever is already there. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ "${ALOHA_NEED_ETCD:-0}" = 1 ] && ! command -v etcd >/dev/null 2>&1; then
  need_apt+=(etcd-server)
fi
# The console's browser test: Debian's chromium, driven by npm's playwright-core.
if [ "${ALOHA_NEED_BROWSER:-0}" = 1 ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
  command -v npm >/dev/null 2>&1 || need_apt+=(npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need_apt[*]}; run as root or install them first" >&2
    exit 1
  fi
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo not found: install a Rust toolchain (1.85 or newer), e.g. with rustup" >&2
    exit 1
  fi
fi
