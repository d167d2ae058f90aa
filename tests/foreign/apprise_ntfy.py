"""Apprise (the real package from PyPI) notifying through runnel's ntfy API.

Starts two hubs of the binary under test, both requiring credentials (a JWT secret and API
keys): one over plain HTTP for ntfy:// URLs and one over HTTPS, with a certificate made by
`runnel cert`, for ntfys:// URLs. Apprise trusts that certificate through REQUESTS_CA_BUNDLE,
so TLS is really verified. Every URL form Apprise has for credentials is sent (a token as
`?auth=token`, `?token=`, a bare `tk_` token, user and password with an API key or a JWT as the
password), once through the `apprise` command; then each message is read back through runnel's
own API (/history and the SSE stream) and through ntfy's (/<topic>/json?poll=1), with the same
id everywhere. Wrong credentials and an untrusted certificate must make Apprise report failure
and store nothing.

Usage: apprise_ntfy.py (the hub is $HUB_BIN, default target/debug/runnel). Run it with the
Python of a virtual environment that has `apprise`; tests/foreign/apprise.sh makes one.
Exits non-zero, saying why, on any mismatch; never skips."""

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

try:
    import apprise
    import requests
except ImportError as e:
    print(f"Apprise over ntfy: FAILED: {e} (run tests/foreign/apprise.sh)", file=sys.stderr)
    sys.exit(1)

PASSED = 0
LOG = []  # Apprise's log lines of the current send, shown when something fails


class Capture(logging.Handler):
    def emit(self, record):
        LOG.append(f"{record.levelname}: {record.getMessage()}")


logging.getLogger("apprise").setLevel(logging.DEBUG)
logging.getLogger("apprise").addHandler(Capture())


def fail(why):
    print(f"Apprise over ntfy: FAILED: {why}", file=sys.stderr)
    if LOG:
        print("Apprise's log of the last send:", file=sys.stderr)
        for line in LOG:
            print(f"  {line}", file=sys.stderr)
    sys.stderr.flush()
    print(f"{PASSED} passed, 1 failed", flush=True)
    sys.exit(1)


def check(ok, why):
    if not ok:
        fail(why)


class Hub:
    """A hub process on 127.0.0.1, port 0, its address read from its log."""

    def __init__(self, binary, work, name, config):
        self.log_path = os.path.join(work, f"{name}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "serve",
                    "-c",
                    config,
                    "--listen",
                    "127.0.0.1:0",
                    "--data",
                    os.path.join(work, f"{name}-data"),
                ],
                stdout=log,
                stderr=log,
            )
        self.base = None
        for _ in range(100):
            with open(self.log_path) as f:
                m = re.search(r"listening on (https?://[0-9.:]+)", f.read())
            if m:
                self.base = m.group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if self.base is None:
            self.stop()
            with open(self.log_path) as f:
                fail(f"the {name} hub did not start:\n{f.read()}")
        self.addr = self.base.split("://", 1)[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def notify(url, title, body):
    """Sends with Apprise's Python API; True when Apprise says it was delivered."""
    LOG.clear()
    a = apprise.Apprise()
    check(a.add(url), f"Apprise does not take the URL {url}")
    return bool(a.notify(title=title, body=body))


def get(hub, path, key, verify):
    r = requests.get(
        hub.base + path, headers={"Authorization": f"Bearer {key}"}, timeout=10, verify=verify
    )
    check(r.status_code == 200, f"GET {path} answered {r.status_code}: {r.text}")
    return r


def native_history(hub, topic, key, verify):
    return get(hub, f"/history?topic={topic}", key, verify).json()["events"]


def native_stream(hub, topic, key, verify, count):
    """The first `count` events of the SSE stream from the earliest, as {id, topic, event, data}."""
    events, block = [], {}
    with requests.get(
        f"{hub.base}/events/{topic}?last_event_id=earliest",
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=(5, 5),
        verify=verify,
    ) as r:
        if r.status_code != 200:  # (r.text would wait for the end of the stream)
            fail(f"GET /events/{topic} answered {r.status_code}")
        for raw in r.iter_lines():
            line = raw.decode("utf-8")  # SSE is UTF-8 whatever requests guesses
            if line:
                name, _, value = line.partition(":")
                block[name] = value[1:] if value.startswith(" ") else value
                continue
            if block.get("event") == "message":
                events.append(block)
                if len(events) == count:
                    break
            block = {}
    return events


def ntfy_poll(hub, topic, key, verify):
    text = get(hub, f"/{topic}/json?poll=1", key, verify).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def same(got, want):
    """`want` None: absent; a pattern: a string it matches; a set: a list of those, in any
    order (Apprise sorts the tags it sends); else equal."""
    if isinstance(want, set):
        return isinstance(got, list) and sorted(got) == sorted(want)
    if isinstance(want, re.Pattern):
        return isinstance(got, str) and want.match(got) is not None
    return got == want


def read_back(hub, topic, key, verify, sent):
    """Checks that exactly `sent` (title, body, extra fields) is on `topic`, natively and
    through ntfy, with one id."""
    history = native_history(hub, topic, key, verify)
    check(
        len(history) == len(sent),
        f"/history of {topic}: {len(history)} events, not {len(sent)}: {history}",
    )
    stream = native_stream(hub, topic, key, verify, len(sent)) if sent else []
    check(
        len(stream) == len(sent),
        f"SSE of {topic}: {len(stream)} messages, not {len(sent)}: {stream}",
    )
    polled = ntfy_poll(hub, topic, key, verify)
    check(
        len(polled) == len(sent),
        f"ntfy poll of {topic}: {len(polled)} messages, not {len(sent)}: {polled}",
    )
    for (title, body, extra), ev, sse, msg in zip(sent, history, stream, polled, strict=True):
        check(ev["event"] == "message", f"native event type on {topic}: {ev}")
        check(ev["topics"] == [topic], f"native topics on {topic}: {ev}")
        data = ev["data"]
        check(data.get("message") == body, f"native message on {topic}: {data}")
        check(data.get("title") == title, f"native title on {topic}: {data}")
        for k, v in extra.items():
            check(same(data.get(k), v), f"native {k} on {topic}: {data}, expected {v!r}")
        check(
            sse.get("id") == ev["id"] and sse.get("topic") == topic,
            f"SSE event on {topic}: {sse}, history says {ev}",
        )
        check(
            json.loads(sse.get("data", "null")) == data,
            f"SSE data on {topic}: {sse}, history says {data}",
        )
        check(msg.get("id") == ev["id"], f"ntfy id on {topic}: {msg}, native id {ev['id']}")
        check(
            msg.get("event") == "message" and msg.get("topic") == topic,
            f"ntfy event/topic on {topic}: {msg}",
        )
        check(
            msg.get("message") == body and msg.get("title") == title,
            f"ntfy message/title on {topic}: {msg}",
        )
        for k, v in extra.items():
            check(same(msg.get(k), v), f"ntfy {k} on {topic}: {msg}, expected {v!r}")


def main():
    global PASSED
    binary = os.path.abspath(os.environ.get("HUB_BIN", "target/debug/runnel"))
    check(os.access(binary, os.X_OK), f"no hub binary at {binary} (cargo build)")
    work = tempfile.mkdtemp(prefix="runnel-apprise-")
    hubs = []
    try:
        key = "rk_" + secrets.token_hex(16)  # an API key as runnel users make them
        tk_key = "tk_" + secrets.token_hex(16)  # one shaped like ntfy's access tokens
        secret = secrets.token_urlsafe(32)
        auth = f'[auth]\nrequired = true\njwt_secret = "{secret}"\n'
        for name, k in (("apprise", key), ("ntfy-style", tk_key)):
            auth += (
                f'[[auth.api_keys]]\nname = "{name}"\n'
                f'key_sha256 = "{hashlib.sha256(k.encode()).hexdigest()}"\n'
                'publish = ["*"]\nsubscribe = ["*"]\n'
            )
        cert, tls_key = os.path.join(work, "hub.crt"), os.path.join(work, "hub.key")
        subprocess.run(
            [
                binary,
                "cert",
                "--self-signed",
                "--hosts",
                "127.0.0.1,localhost",
                "--cert",
                cert,
                "--key",
                tls_key,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        plain_cfg, tls_cfg, other_cfg = (
            os.path.join(work, n) for n in ("plain.toml", "tls.toml", "other.toml")
        )
        with open(plain_cfg, "w") as f:
            f.write(auth)
        with open(tls_cfg, "w") as f:
            f.write(auth + f'[tls]\ncert = "{cert}"\nkey = "{tls_key}"\n')
        with open(other_cfg, "w") as f:
            f.write(f'[auth]\njwt_secret = "{secrets.token_urlsafe(32)}"\n')

        def token(config):
            out = subprocess.run(
                [
                    binary,
                    "token",
                    "-c",
                    config,
                    "--sub",
                    "apprise",
                    "--publish",
                    "*",
                    "--subscribe",
                    "*",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            check(out.count(".") == 2, f"`runnel token` printed {out!r}")
            return out

        jwt = token(plain_cfg)
        forged = token(other_cfg)  # well formed, signed with another secret

        plain = Hub(binary, work, "plain", plain_cfg)
        hubs.append(plain)
        tls = Hub(binary, work, "tls", tls_cfg)
        hubs.append(tls)
        check(plain.base.startswith("http://"), f"plain hub at {plain.base}")
        check(tls.base.startswith("https://"), f"TLS hub at {tls.base}")

        os.environ["REQUESTS_CA_BUNDLE"] = cert  # what Apprise's requests trusts
        os.environ["NO_PROXY"] = "127.0.0.1,localhost"
        icon = re.compile(r"^https://")  # Apprise sends its own icon as X-Icon unless image=no

        sent = {}  # (hub, topic) -> [(title, body, extra)]
        for hub, scheme in ((plain, "ntfy"), (tls, "ntfys")):
            h = hub.addr
            q = urlencode(
                {
                    "auth": "token",
                    "priority": "high",
                    "tags": "warning,robot",
                    "click": "https://example.com/runnel?a=1",
                }
            )
            cases = [
                # A token: `?auth=token` makes the user part the Bearer token.
                (
                    f"{scheme}://{key}@{h}/{scheme}-token-key?{q}",
                    "token-key",
                    {
                        "priority": 4,
                        "tags": {"warning", "robot"},
                        "click": "https://example.com/runnel?a=1",
                    },
                ),
                # A token as `?token=` (a JWT here); no icon.
                (
                    f"{scheme}://{h}/{scheme}-token-jwt?token={jwt}&priority=max&image=no",
                    "token-jwt",
                    {"priority": 5, "icon": None},
                ),
                # A bare user part shaped like ntfy's tokens (tk_...) is taken as one.
                (f"{scheme}://{tk_key}@{h}/{scheme}-token-tk", "token-tk", {}),
                # Basic: any user name, the API key as the password.
                (
                    f"{scheme}://apprise:{key}@{h}/{scheme}-basic-key?tags=floppy_disk",
                    "basic-key",
                    {"tags": {"floppy_disk"}},
                ),
                # Basic with the JWT as the password.
                (
                    f"{scheme}://apprise:{jwt}@{h}/{scheme}-basic-jwt?priority=low",
                    "basic-jwt",
                    {"priority": 2},
                ),
            ]
            for url, what, extra in cases:
                topic = url.split("?")[0].rsplit("/", 1)[1]
                title = f"{scheme} {what}"
                body = f"Disk 91 % full on {what} \u2014 \u00fcber \U0001f4be"
                check(notify(url, title, body), f"Apprise could not send to {url}")
                if "icon" not in extra:
                    extra = {**extra, "icon": icon}
                sent[(hub, topic)] = [(title, body, extra)]
                PASSED += 1

        # The command line, over TLS, with the JWT as a token.
        topic = "cli-ntfys"
        home = os.path.join(work, "home")
        os.makedirs(home)
        url = f"ntfys://{jwt}@{tls.addr}/{topic}?auth=token&tags=cli"
        r = subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "apprise"),
                "-vv",
                "--storage-mode",
                "memory",
                "-t",
                "from the command line",
                "-b",
                "sent by apprise",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": home},
        )
        check(r.returncode == 0, f"`apprise` exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        sent[(tls, topic)] = [("from the command line", "sent by apprise", {"tags": {"cli"}})]
        PASSED += 1

        # What Apprise must fail to send, and the hub must not store.
        wrong = "rk_" + secrets.token_hex(16)
        negatives = [
            (plain, f"ntfy://apprise:{wrong}@{plain.addr}/neg-plain", "a wrong password", "401"),
            (tls, f"ntfys://apprise:{forged}@{tls.addr}/neg-tls", "a JWT of another secret", "401"),
            (tls, f"ntfys://{wrong}@{tls.addr}/neg-tls-token?auth=token", "a wrong token", "401"),
            (
                tls,
                f"ntfys://apprise:{key}@{tls.addr}/neg-untrusted",
                "a certificate it does not trust",
                "CERTIFICATE_VERIFY_FAILED",
            ),
        ]
        for hub, url, why, said in negatives:
            topic = url.split("?")[0].rsplit("/", 1)[1]
            if topic == "neg-untrusted":
                del os.environ["REQUESTS_CA_BUNDLE"]
            try:
                ok = notify(url, "must not arrive", "must not arrive")
            finally:
                os.environ["REQUESTS_CA_BUNDLE"] = cert
            check(not ok, f"Apprise reported success with {why}: {url}")
            check(said in "\n".join(LOG), f"Apprise failed with {why}, but not saying {said!r}")
            sent[(hub, topic)] = []
            PASSED += 1

        # The hub really refuses reads without credentials.
        r = requests.get(f"{plain.base}/history?topic=ntfy-basic-key", timeout=10)
        check(r.status_code == 401, f"/history without credentials answered {r.status_code}")
        LOG.clear()

        for (hub, topic), msgs in sent.items():
            read_back(hub, topic, key, cert, msgs)
            PASSED += 1

        print(
            f"Apprise {apprise.__version__} over ntfy: {len(sent)} topics read back natively "
            "and through ntfy"
        )
        print(f"{PASSED} passed, 0 failed")
    finally:
        for hub in hubs:
            hub.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
