#!/usr/bin/env bash
# Installs a runnel .deb on this machine (as root; meant for CI and throwaway machines) and
# checks what the package promises: files, owners and modes, the conffile, the secrets made
# at install, the system user, the systemd unit (verify + security score), the service
# binary running as its user, an upgrade that keeps local changes and secrets, then remove
# and purge leaving nothing behind.
#   packaging/test-deb.sh target/debian/runnel_0.1.0-1_amd64.deb
set -euo pipefail
deb=$(readlink -f "${1:?usage: packaging/test-deb.sh <runnel.deb>}")
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; "$@" || fail "$what"; echo "ok: $what"; }
mode_owner() { stat -c '%a %U:%G' "$1"; }

export DEBIAN_FRONTEND=noninteractive
dpkg --purge runnel >/dev/null 2>&1 || true

echo "== install"
apt-get install -y "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "install"; }
grep -q "Admin API key" "$work/install.log" || fail "postinst prints how to start"
check "binary" test "$(mode_owner /usr/bin/runnel)" = "755 root:root"
check "config is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' runnel | grep -q /etc/runnel/runnel.toml"
check "config mode" test "$(mode_owner /etc/runnel/runnel.toml)" = "644 root:root"
check "secrets readable by root and the service only" test "$(mode_owner /etc/runnel/secrets.toml)" = "640 root:runnel"
check "admin key readable by root only" test "$(mode_owner /etc/runnel/admin-key)" = "600 root:root"
check "data dir" test "$(mode_owner /var/lib/runnel)" = "750 runnel:runnel"
check "system user" test "$(getent passwd runnel | cut -d: -f3)" -lt 1000
check "no login shell" sh -c 'getent passwd runnel | cut -d: -f7 | grep -q nologin'
check "unit installed" test -f /usr/lib/systemd/system/runnel.service
check "unit enabled" test -L /etc/systemd/system/multi-user.target.wants/runnel.service
links_resolve() {
  local doc=/usr/share/doc/runnel/README.md link
  for link in $(grep -o '](docs/[^)#]*' "$doc" | cut -c3- | sort -u); do
    [ -e "/usr/share/doc/runnel/$link" ] || { echo "missing: $link" >&2; return 1; }
  done
}
check "the installed README's links resolve" links_resolve
check "man page" test -f /usr/share/man/man1/runnel.1.gz
key=$(cat /etc/runnel/admin-key)
check "admin key is 32 random bytes, URL-safe" sh -c 'printf %s "$1" | grep -Eqx "[A-Za-z0-9_-]{43}"' _ "$key"
check "JWT secret is 48 random bytes, URL-safe" grep -Eq '^jwt_secret = "[A-Za-z0-9_-]{64}"$' /etc/runnel/secrets.toml
check "secrets hold the key's hash" grep -q "$(printf %s "$key" | sha256sum | cut -d' ' -f1)" /etc/runnel/secrets.toml
secrets_before=$(sha256sum /etc/runnel/secrets.toml)

echo "== configuration and unit"
runnel check -c /etc/runnel/runnel.toml >"$work/check" || { cat "$work/check"; fail "runnel check"; }
check "check masks the secret" sh -c "grep -q 'jwt_secret = \"\*\*\*\"' '$work/check' && ! grep -q \"\$(grep jwt_secret /etc/runnel/secrets.toml | cut -d'\"' -f2)\" '$work/check'"
out=$(systemd-analyze verify /usr/lib/systemd/system/runnel.service 2>&1 || true)
[ -z "$out" ] || fail "systemd-analyze verify says: $out"
echo "ok: systemd-analyze verify is silent"
score=$(systemd-analyze security --offline=true /usr/lib/systemd/system/runnel.service 2>&1 | sed -n 's/.*Overall exposure level for runnel.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no security score"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score > 2.0"
echo "ok: systemd-analyze security exposure $score"

echo "== the service binary as its user (PID 1 here is not systemd)"
port=$(( 20000 + RANDOM % 20000 ))
runuser -u runnel -g runnel -- /usr/bin/runnel serve -c /etc/runnel/runnel.toml \
  --listen "127.0.0.1:$port" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
check "health" curl -fsS "http://127.0.0.1:$port/health"
check "publishing needs credentials" test "$(curl -s -o /dev/null -w '%{http_code}' --data x "http://127.0.0.1:$port/publish/news")" = 401
check "the admin key publishes" curl -fsS -H "X-API-Key: $key" --data hello "http://127.0.0.1:$port/publish/news"
token=$(runnel token -c /etc/runnel/runnel.toml --sub alice --ttl 5m)
curl -sN --max-time 3 -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$port/events?topic=news&last_event_id=earliest" >"$work/stream" || true
check "a minted token reads the replay" grep -q '^data: hello' "$work/stream"
check "the log is owned by the service" test "$(stat -c %U /var/lib/runnel/log/db)" = runnel
kill -TERM "$pid"
wait "$pid" || true  # runuser's own status after a signal; the hub's log says how it ended
pid=
check "clean shutdown" grep -q "log flushed" "$work/serve.log"

echo "== upgrade keeps local changes and secrets"
echo '# a local change' >>/etc/runnel/runnel.toml
dpkg-deb -R "$deb" "$work/pkg"
sed -i 's/^Version: \(.*\)-1$/Version: \1-2/' "$work/pkg/DEBIAN/control"
dpkg-deb -b --root-owner-group "$work/pkg" "$work/upgrade.deb" >/dev/null
apt-get install -y -o Dpkg::Options::=--force-confold "$work/upgrade.deb" >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "upgrade"; }
check "upgraded" test "$(dpkg-query -W -f='${Version}' runnel)" = "$(dpkg-deb -f "$work/upgrade.deb" Version)"
check "local config change kept" grep -q '# a local change' /etc/runnel/runnel.toml
check "secrets kept" test "$(sha256sum /etc/runnel/secrets.toml)" = "$secrets_before"
check "no second welcome" sh -c "! grep -q 'Admin API key' '$work/upgrade.log'"

echo "== remove keeps configuration and data"
apt-get remove -y runnel >/dev/null 2>&1
check "binary gone" test ! -e /usr/bin/runnel
check "config kept" test -f /etc/runnel/runnel.toml
check "secrets kept" test -f /etc/runnel/secrets.toml
check "data kept" test -d /var/lib/runnel/log

echo "== purge removes everything"
dpkg --purge runnel >/dev/null
for p in /etc/runnel /var/lib/runnel /usr/lib/systemd/system/runnel.service \
         /etc/systemd/system/multi-user.target.wants/runnel.service; do
  check "$p gone" test ! -e "$p"
done
check "user gone" sh -c '! getent passwd runnel'
check "group gone" sh -c '! getent group runnel'
check "package gone" sh -c "! dpkg-query -W -f='\${Status}' runnel 2>/dev/null | grep -q installed"
echo "package test passed: $(basename "$deb")"
