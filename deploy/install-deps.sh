#!/usr/bin/env bash
# Installs everything coapgate's build, tests and benchmarks need on a bare Debian 12
# (bookworm), as root: Debian packages with apt-get, the Node test clients with npm.
# Idempotent: a second run changes nothing and does not touch the network.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates
  dpkg-dev                          # dpkg-source: `apt-get source wolfssl` unpacks with it
  autoconf automake libtool         # wolfSSL's source package ships no configure (autogen.sh)
  clang libclang-rt-14-dev          # ASan/UBSan/TSan presets and the libFuzzer targets
  # libraries (header-only ones included)
  libexpected-dev libcli11-dev libfmt-dev libspdlog-dev libtomlplusplus-dev nlohmann-json3-dev
  liburing-dev libsqlite3-dev libmosquitto-dev librdkafka-dev libxxhash-dev
  libpq-dev                         # the PostgreSQL registry backend (devices.backend)
  libsystemd-dev systemd            # sd_notify (Type=notify, watchdog); systemd-analyze verify
  libcpp-httplib-dev prometheus-cpp-dev  # the admin listener: HTTP, Prometheus text format
  libboost-dev                      # Boost.Lockfree: the bounded SPSC queues between threads
  # tests and benchmarks
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  python3                                    # the end-to-end suite (standard library only)
  libcoap3-bin mosquitto mosquitto-clients   # real CoAP clients and MQTT broker for tests
  openssl                                    # `openssl s_client -dtls1_2 -psk` in the DTLS tests
  libcoap3-dev                               # libcoap parser: same-run yardstick in bench/
  gnuplot-nox                                # bench/compare draws its results.png
  prometheus                                 # promtool and a real server scraping coapgate
  postgresql                                 # the registry backend's tests start their own server
  iproute2 nftables conntrack                # the cluster test: namespaces, the balancer (deploy/cluster)
  adduser                                    # the .deb's postinst (tests/deploy: dpkg -i)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # mosquitto's and prometheus's packages start system services (1883, 9090); tests start
  # their own on ephemeral ports, so the system ones are stopped where a service manager runs.
  for service in mosquitto prometheus; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
      systemctl disable --now "$service" || true
    fi
  done
fi

# wolfSSL from Debian's source package (docs/bootstrap-and-dtls.md): Debian's libwolfssl lacks the static-PSK
# suites and AES-NI, so dtls/CMakeLists.txt builds its own static copy from this unpacked,
# Debian-patched source. Needs deb-src entries, which the base image does not have: add
# `deb-src` to every `Types: deb` stanza of the deb822 sources (or mirror the one-line
# `deb` entries of a classic sources.list), once.
wolfssl_src=/usr/local/src/coapgate/wolfssl
if ! compgen -G "$wolfssl_src/wolfssl-*/src/dtls.c" >/dev/null; then
  deb822=/etc/apt/sources.list.d/debian.sources
  if [[ -f $deb822 ]]; then
    if grep -qE '^Types:[[:space:]]*deb[[:space:]]*$' "$deb822"; then
      sed -i -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb deb-src/' "$deb822"
    fi
  elif [[ -f /etc/apt/sources.list ]] && ! grep -q '^deb-src ' /etc/apt/sources.list; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >>/etc/apt/sources.list
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  rm -rf "$wolfssl_src.tmp" && mkdir -p "$wolfssl_src.tmp"
  # dpkg-source (run by apt-get source) unpacks the orig tarball and applies debian/patches.
  # As root apt cannot drop to its _apt sandbox user in an arbitrary directory: that is only
  # a warning, so silence it.
  (cd "$wolfssl_src.tmp" && apt-get source -q -o APT::Sandbox::User=root wolfssl)
  rm -rf "$wolfssl_src" && mv "$wolfssl_src.tmp" "$wolfssl_src"
  echo "install-deps: wolfSSL source in $(ls -d "$wolfssl_src"/wolfssl-*/)"
fi

# Node.js test clients (node-coap-client: the reference system's documented DTLS client).
if ! command -v npm >/dev/null; then
  apt-get install -y -q --no-install-recommends nodejs npm
fi
if [[ ! -d tests/clients/node_modules ]] || [[ tests/clients/package-lock.json -nt tests/clients/node_modules ]]; then
  # `npm install` rather than `npm ci`: npm 10/11's ci rejects this lock file for lacking
  # entries of platform-specific optional packages (node-aead-crypto-*), which install does
  # not need; the lock file still pins every version.
  npm install --prefix tests/clients --no-audit --no-fund --loglevel=error
  touch tests/clients/node_modules
fi
echo "install-deps: ready"
