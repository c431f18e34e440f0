#!/usr/bin/env bash
# Installs the Debian bookworm packages ztproxy needs to build, test and run its demo, and nothing
# that is already there. Used by `make demo` and `make test` so a fresh machine needs no manual step.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libssl-dev openssl liburing-dev libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev
    libspdlog-dev libfmt-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
    libvectorscan-dev libpcre2-dev prometheus-cpp-dev
    libsystemd-dev libseccomp-dev libcap-dev
    libgtest-dev libgmock-dev
    clang llvm libclang-rt-14-dev
    curl python3 procps iproute2
    patchelf
    gnutls-bin libnss3-tools botan
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-build-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-build-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
