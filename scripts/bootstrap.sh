#!/usr/bin/env bash
# Make this machine ready for the demo, the tests and the benchmarks; safe to run again.
#
# The real parts come from Debian (the tests start their own brokers and Prometheus on
# loopback, so the packaged system services must not run or hold 1883/9090); the Python
# parts go into .venv as an editable install. Reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(mosquitto mosquitto-clients prometheus python3-venv openssl iproute2 nftables
          nut-server snmpsim chrony chromium fonts-dejavu-core
          prometheus-smokeping-prober prometheus-alertmanager
          prometheus-mqtt-exporter  # mqtt2prometheus: the peer in bench/national_bench.py
          systemd)  # systemd-analyze verifies the agent role's unit (no systemd as PID 1 needed)
SERVICES=(mosquitto prometheus prometheus-smokeping-prober nut-server nut-monitor chrony
          prometheus-alertmanager prometheus-mqtt-exporter)
VENV=.venv
STAMP=$VENV/.bootstrap-pyproject

say() { echo "bootstrap: $*"; }

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

stop_services() {
    # A package's postinst may have started its service: stop it and keep it from booting.
    # The service's own tools only act on the service, never on a test's broker.
    local svc
    for svc in "${SERVICES[@]}"; do
        if [[ -d /run/systemd/system ]] && systemctl cat "$svc" >/dev/null 2>&1; then
            systemctl disable --now "$svc" >/dev/null 2>&1 && say "stopped and disabled $svc"
        elif [[ -x /etc/init.d/$svc ]] && /etc/init.d/"$svc" status >/dev/null 2>&1; then
            /etc/init.d/"$svc" stop >/dev/null 2>&1 && say "stopped the $svc system service"
        fi
    done
}

report_ports() {
    command -v ss >/dev/null || return 0
    local held
    held=$(ss -ltnp 2>/dev/null | awk '$4 ~ /:(1883|9090)$/' || true)
    if [[ -n $held ]]; then
        say "note: ports 1883/9090 are taken (the demo then picks free ports):"
        echo "$held"
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        say "system packages present: ${PACKAGES[*]}"
        return
    fi
    if [[ $EUID -ne 0 ]]; then
        echo "bootstrap: missing system packages: ${missing[*]}; as root, run:" >&2
        echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    # Keep postinst scripts from starting services while we install (Debian's policy-rc.d).
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((added_policy)); then
        rm -f "$policy"
    fi
    stop_services
}

make_venv() {
    if [[ ! -x $VENV/bin/python ]]; then
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [[ -f $STAMP ]] && cmp -s pyproject.toml "$STAMP"; then
        say "$VENV up to date"
        return
    fi
    say "pip install -e '.[test]' into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    cp pyproject.toml "$STAMP"
}

install_packages
report_ports
make_venv
