#!/usr/bin/env bash
# Checks the package where systemd runs: boots a throwaway Debian (debootstrap, then
# systemd-nspawn with systemd as PID 1) and, inside it, installs the .deb with apt and drives
# the service the way an owner would. What it shows:
#   - `apt install` starts the service, and it is "active" (Type=notify: only after READY=1);
#     it runs as the runnel user, with the unit's limits, and the exposure score is <= 2.0;
#   - the commands the install message prints work as printed (token, health, publish);
#   - `systemctl reload` keeps an open stream, applies the new log level and logs it;
#   - `systemctl restart` ends streams with `event: shutdown` and the log survives it;
#   - the watchdog is pinged, and a hub that stops pinging is killed and restarted;
#   - a killed hub is restarted (Restart=on-failure);
#   - an upgrade restarts it and keeps secrets and the log;
#   - HTTPS as the packaged configuration describes it, and `systemctl reload` serving a
#     renewed certificate without a restart;
#   - remove stops it; purge leaves no unit, user, configuration or data behind.
#
#   sudo packaging/test-systemd.sh target/x86_64-unknown-linux-gnu/debian/runnel_0.1.0-1_amd64.deb
#   sudo packaging/test-systemd.sh target/aarch64-unknown-linux-gnu/debian/runnel_0.1.0-1_arm64.deb
#
# The .deb may be for arm64 or armhf: its Debian then runs under qemu-user (qemu-user-static,
# binfmt_misc), with PrivateUsers= off, the one directive emulation cannot honour.
#
# Needs root, debootstrap and systemd-nspawn (Debian's systemd-container). The Debian mirror
# is the one this machine's apt uses (or $DEBIAN_MIRROR). ROOTFS_CACHE=dir keeps the
# debootstrapped tree there and starts each run from a copy of it.
set -euo pipefail
deb=$(readlink -f "${1:?usage: packaging/test-systemd.sh <runnel.deb>}")
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/runnel-systemd.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

mirror=${DEBIAN_MIRROR:-$(
  { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list
  } 2>/dev/null | awk '/^URIs:/ || /^deb / {print $2}' | grep -v security | head -n 1 || true)}
[ -n "$mirror" ] || { echo "no Debian mirror found; set DEBIAN_MIRROR" >&2; exit 2; }
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

# A package for another architecture (arm64, armhf) gets a Debian of its own architecture,
# run by qemu-user through binfmt_misc (registered here if it is not yet).
arch=$(dpkg-deb -f "$deb" Architecture)
emulated=
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  emulated=1
  case "$arch" in
    arm64) qemu=qemu-aarch64 ;;
    armhf) qemu=qemu-arm ;;
    *) echo "no emulation set up for $arch" >&2; exit 2 ;;
  esac
  [ -e /proc/sys/fs/binfmt_misc/register ] ||
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e "/proc/sys/fs/binfmt_misc/$qemu" ] ||
    grep -v '^#' "/usr/lib/binfmt.d/$qemu.conf" >/proc/sys/fs/binfmt_misc/register
fi

bootstrap() {
  debootstrap --arch="$arch" --variant=minbase --include=systemd,systemd-sysv,dbus,curl,adduser \
    "$suite" "$1" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    echo "debootstrap failed" >&2
    exit 1
  }
}
root="$work/root"
if [ -n "${ROOTFS_CACHE:-}" ]; then
  [ -x "$ROOTFS_CACHE/usr/bin/systemctl" ] || { rm -rf "$ROOTFS_CACHE"; bootstrap "$ROOTFS_CACHE"; }
  cp -a "$ROOTFS_CACHE" "$root"
else
  bootstrap "$root"
fi

# The package, and the same package as a later version for the upgrade.
cp "$deb" "$root/root/runnel.deb"
dpkg-deb -R "$deb" "$work/pkg"
sed -i 's/^Version: \(.*\)-1$/Version: \1-2/' "$work/pkg/DEBIAN/control"
dpkg-deb -b --root-owner-group "$work/pkg" "$root/root/runnel-upgrade.deb" >/dev/null

# qemu-user cannot set up the user namespace PrivateUsers= asks for; under emulation that one
# directive is turned off, in a drop-in, and said so.
if [ -n "$emulated" ]; then
  mkdir -p "$root/etc/systemd/system/runnel.service.d"
  printf '[Service]\nPrivateUsers=no\n' >"$root/etc/systemd/system/runnel.service.d/emulated.conf"
  echo "$arch under emulation: PrivateUsers=no for this test"
fi

# The checks run inside, as a oneshot unit once the system is up; they power it off.
cat >"$root/root/check.sh" <<'CHECK'
#!/bin/bash
set -u
exec >/root/result.log 2>&1
fail() {
  echo "FAIL: $*"
  echo "--- the unit as systemd reads it"
  systemctl cat runnel --no-pager 2>&1 | grep -v '^#' | grep -A3 '^\[\|\.conf'
  echo "--- journal of runnel.service"
  journalctl -u runnel --no-pager | tail -n 40
  systemctl poweroff
  exit 1
}
ok() { echo "ok: $*"; }
prop() { systemctl show -P "$1" runnel; }
wait_for() {  # wait_for <seconds> <command...>
  local n=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}
has() { grep -q -- "$2" "$1"; }
# log_keeps_both <credential header>: the log replays both events published so far.
log_keeps_both() {
  case "$(curl -sN --max-time 2 -H "$1" \
    "http://127.0.0.1:8080/events?topic=news&last_event_id=earliest")" in
    *"data: first"*"data: second"*) return 0 ;;
    *) return 1 ;;
  esac
}
journal_has() { journalctl -u runnel --no-pager | grep -q -- "$1"; }

# What the package depends on and this minimal system lacks was fetched before the boot
# (the booted system has no network of its own); apt installs it from its cache.
apt-get install -y /root/runnel.deb >/root/install.log 2>&1 || { cat /root/install.log; fail "apt install"; }
systemctl is-active -q runnel || fail "not active after apt install"
ok "apt install started the service; it is active, so it sent READY=1"
[ "$(systemctl is-enabled runnel)" = enabled ] || fail "not enabled"
ok "enabled"
[ "$(prop StatusText)" = serving ] || fail "status text: $(prop StatusText)"
ok "status: serving"
pid=$(prop MainPID)
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = "$(id -u runnel)" ] || fail "runs as uid $uid"
ok "runs as the runnel user"
[ "$(prop MemoryMax)" = 268435456 ] && [ "$(prop MemoryHigh)" = 201326592 ] || fail "memory limits"
[ "$(prop LimitNOFILE)" = 65536 ] || fail "LimitNOFILE $(prop LimitNOFILE)"
journal_has 'open-file limit' && fail "the hub thinks its open-file limit is too low"
ok "MemoryHigh=192M, MemoryMax=256M, LimitNOFILE=65536 (and the hub sees it)"
score=$(systemd-analyze security runnel.service | sed -n 's/.*Overall exposure level for runnel.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure '$score'"
ok "systemd-analyze security on the running service: $score"

# What the install message prints, as printed.
grep -q "sudo runnel token --sub alice" /root/install.log || fail "install message"
key=$(cat /etc/runnel/admin-key)
token=$(runnel token --sub alice --ttl 10m) || fail "runnel token"
curl -fsS http://127.0.0.1:8080/health >/dev/null || fail health
pub() { curl -fsS -H "X-API-Key: $key" --data-binary "$1" http://127.0.0.1:8080/publish/news >/dev/null; }
pub first || fail "publish with the admin key"
ok "token, health and publish work as the install message says"

curl -sN --max-time 120 -H "Authorization: Bearer $token" \
  "http://127.0.0.1:8080/events?topic=news&last_event_id=earliest" >/root/stream &
reader=$!
wait_for 5 has /root/stream '^data: first' || fail "the stream did not replay"
journal_has ' DEBUG ' && fail "debug lines before the level was raised"
sed -i 's/^log = "info"/log = "debug"/' /etc/runnel/runnel.toml
systemctl reload runnel || fail "systemctl reload"
wait_for 5 journal_has 'configuration reloaded' || fail "reload not logged"
[ "$(prop MainPID)" = "$pid" ] || fail "reload replaced the process"
pub second || fail "publish after reload"
wait_for 5 has /root/stream '^data: second' || fail "the stream did not outlive the reload"
kill -0 "$reader" 2>/dev/null || fail "the stream ended at reload"
curl -sN --max-time 1 -H "Authorization: Bearer $token" "http://127.0.0.1:8080/events?topic=news" >/dev/null
wait_for 5 journal_has ' DEBUG ' || fail "the new log level was not applied"
ok "reload: same process, the stream goes on, log level now debug"

mkdir -p /etc/systemd/system/runnel.service.d
printf '[Service]\nWatchdogSec=2s\n' >/etc/systemd/system/runnel.service.d/watchdog.conf
systemctl daemon-reload
systemctl restart runnel || fail "systemctl restart"
wait_for 10 has /root/stream '^event: shutdown' || fail "no shutdown event at restart"
wait_for 5 sh -c "! kill -0 $reader 2>/dev/null" || fail "the stream did not end at restart"
systemctl is-active -q runnel || fail "not active after restart"
journal_has 'log flushed' || fail "no clean shutdown logged"
log_keeps_both "Authorization: Bearer $token" || fail "the log lost events at restart"
ok "restart: streams get event: shutdown, the log keeps both events"

ping1=$(prop WatchdogTimestampMonotonic)
wait_for 5 sh -c "[ \"\$(systemctl show -P WatchdogTimestampMonotonic runnel)\" != '$ping1' ]" \
  || fail "no watchdog ping within 5 s (WatchdogSec=2s)"
ok "WATCHDOG=1 pings arrive"
# restarted_after <signal> <seconds>: sends the signal to the hub; true once systemd has
# restarted it (a new, active process) within the time.
restarted_after() {
  local pid restarts
  pid=$(prop MainPID)
  restarts=$(prop NRestarts)
  kill "-$1" "$pid"
  wait_for "$2" sh -c "[ \"\$(systemctl show -P NRestarts runnel)\" -gt $restarts ]" &&
    wait_for 10 systemctl is-active -q runnel &&
    [ "$(prop MainPID)" != "$pid" ]
}
restarted_after STOP 15 || fail "a frozen hub was not restarted"
journalctl -u runnel --no-pager | grep -qi 'watchdog' || fail "watchdog timeout not in the journal"
ok "a hub that stops pinging is killed and restarted"
rm /etc/systemd/system/runnel.service.d/watchdog.conf
systemctl daemon-reload

restarted_after KILL 10 || fail "a killed hub was not restarted"
curl -fsS http://127.0.0.1:8080/health >/dev/null || fail "health after kill -9"
ok "Restart=on-failure brings a killed hub back"

secrets=$(sha256sum /etc/runnel/secrets.toml)
pid=$(prop MainPID)
apt-get install -y /root/runnel-upgrade.deb >/root/upgrade.log 2>&1 || { cat /root/upgrade.log; fail upgrade; }
systemctl is-active -q runnel || fail "not active after upgrade"
[ "$(prop MainPID)" != "$pid" ] || fail "the upgrade did not restart the hub"
[ "$(sha256sum /etc/runnel/secrets.toml)" = "$secrets" ] || fail "the upgrade changed the secrets"
log_keeps_both "X-API-Key: $key" || fail "the upgrade lost events"
ok "upgrade: restarted, secrets and log kept"

# HTTPS as the packaged configuration describes it, and a certificate renewed by reload.
runnel cert --self-signed --hosts 127.0.0.1,localhost \
  --cert /etc/runnel/tls.crt --key /etc/runnel/tls.key >/dev/null || fail "runnel cert"
chgrp runnel /etc/runnel/tls.key && chmod 0640 /etc/runnel/tls.key
cp /etc/runnel/tls.crt /root/first.crt
sed -i 's/^# \[tls\]$/[tls]/; s/^# cert = /cert = /; s/^# key = /key = /' /etc/runnel/runnel.toml
systemctl restart runnel || fail "restart with [tls]"
curl -fsS --cacert /root/first.crt https://127.0.0.1:8080/health >/dev/null || fail "HTTPS with the packaged [tls]"
pid=$(prop MainPID)
runnel cert --self-signed --hosts 127.0.0.1,localhost --force \
  --cert /etc/runnel/tls.crt --key /etc/runnel/tls.key >/dev/null || fail "runnel cert --force"
chgrp runnel /etc/runnel/tls.key && chmod 0640 /etc/runnel/tls.key
curl -fsS --cacert /etc/runnel/tls.crt https://127.0.0.1:8080/health >/dev/null 2>&1 \
  && fail "the new certificate was served before the reload"
systemctl reload runnel || fail "reload for the certificate"
wait_for 5 journal_has 'TLS certificate reloaded' || fail "certificate reload not logged"
curl -fsS --cacert /etc/runnel/tls.crt https://127.0.0.1:8080/health >/dev/null || fail "new certificate not served"
[ "$(prop MainPID)" = "$pid" ] || fail "the certificate reload replaced the process"
rm /etc/runnel/tls.crt /etc/runnel/tls.key  # made by the owner, so not the package's to purge
ok "HTTPS as packaged; systemctl reload serves a renewed certificate in the same process"

apt-get remove -y runnel >/dev/null 2>&1 || fail remove
systemctl is-active -q runnel && fail "still running after remove"
[ -f /etc/runnel/secrets.toml ] && [ -d /var/lib/runnel ] || fail "remove took configuration or data"
ok "remove stops the service and keeps configuration and data"
apt-get purge -y runnel >/dev/null 2>&1 || fail purge
for p in /etc/runnel /var/lib/runnel /lib/systemd/system/runnel.service \
         /usr/lib/systemd/system/runnel.service \
         /etc/systemd/system/multi-user.target.wants/runnel.service; do
  [ ! -e "$p" ] || fail "$p left after purge"
done
getent passwd runnel >/dev/null && fail "user left after purge"
[ "$(systemctl show -P LoadState runnel)" = not-found ] || fail "unit still known after purge"
ok "purge leaves nothing"
echo PASS
systemctl poweroff
CHECK
chmod +x "$root/root/check.sh"
cat >"$root/etc/systemd/system/runnel-check.service" <<'UNIT'
[Unit]
Description=runnel package checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/root/check.sh
TimeoutStartSec=300
[Install]
WantedBy=default.target
UNIT
mkdir -p "$root/etc/systemd/system/default.target.wants"
ln -sf /etc/systemd/system/runnel-check.service "$root/etc/systemd/system/default.target.wants/"

# apt fetches the package's missing dependencies now, with the host's network. The booted
# system gets a private network (loopback only), so the hub in it cannot clash with ports
# on this machine.
nspawn=(systemd-nspawn -q -D "$root" --register=no --keep-unit)
"${nspawn[@]}" --pipe sh -c 'apt-get update -q && apt-get install -y --download-only /root/runnel.deb' \
  >"$work/fetch.log" 2>&1 </dev/null || { cat "$work/fetch.log"; echo "apt could not fetch" >&2; exit 1; }
echo "booting $suite with systemd-nspawn"
timeout 420 "${nspawn[@]}" --private-network -b </dev/null >"$work/boot.log" 2>&1 || true
if [ ! -f "$root/root/result.log" ]; then
  tail -n 40 "$work/boot.log"
  echo "FAIL: the checks did not run" >&2
  exit 1
fi
cat "$root/root/result.log"
[ "$(tail -n 1 "$root/root/result.log")" = PASS ] || { echo "systemd test failed" >&2; exit 1; }
echo "systemd test passed: $(basename "$deb")"
