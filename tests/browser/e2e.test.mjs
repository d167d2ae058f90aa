// End-to-end tests of runnel in a real browser: Debian's chromium, headless, driven by
// playwright-core. Run by `.ci/run` (after `cargo build`), or by hand:
//   cargo build && (cd tests/browser && npm ci && npm test)
// HUB_BIN picks the binary (default: target/debug/runnel); CHROMIUM the browser
// (default: /usr/bin/chromium). SHOTS=dir keeps the console screenshots there (docs/ keeps
// them passed through `pngquant --quality 80-95 --strip`, which makes them a third the size).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = process.env.HUB_BIN || join(ROOT, "target/debug/runnel");
const SECRET = randomBytes(24).toString("hex");
const ADMIN_KEY = "admin-" + randomBytes(8).toString("hex");
const sha = (s) => createHash("sha256").update(s).digest("hex");
const now = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An HS256 JWT signed with the hub's secret. */
function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: now() + 3600, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

// ------------------------------------------------------------------------------------------
// The hub: a child process on a fixed free port, so it can be killed and started again.

let hubPort;
let dataDir;
let hub = null;
let appPort;
let app;
let browser;
const HUB = () => `http://127.0.0.1:${hubPort}`;

function freePort() {
  return new Promise((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

// A hub's configuration: the auth both hubs share, then the sections given.
function hubToml(port, dir, sections) {
  return `
listen = "127.0.0.1:${port}"
data_dir = "${dir}/data"
log = "warn"
[auth]
jwt_secret = "${SECRET}"
leeway = "0s"
anonymous_subscribe = ["public"]
[[auth.api_keys]]
name = "ops"
key_sha256 = "${sha(ADMIN_KEY)}"
admin = true
${sections}`;
}

function writeConfig() {
  writeFileSync(join(dataDir, "runnel.toml"), hubToml(hubPort, dataDir, `
[stream]
retry = "1500ms"
heartbeat = "2s"
shutdown_grace = "1s"
[cors]
allow_origins = ["http://127.0.0.1:${appPort}"]
`));
}

async function startHub() {
  const p = spawn(BIN, ["serve", "-c", join(dataDir, "runnel.toml")], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  hub = p;
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`${HUB()}/health`);
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await sleep(50);
  }
  throw new Error("runnel did not start");
}

async function killHub(signal = "SIGKILL") {
  const p = hub;
  hub = null;
  if (!p || p.exitCode !== null) return;
  const exited = new Promise((r) => p.once("exit", r));
  p.kill(signal);
  await exited;
}

/** POST /publish (or /notify) as the admin key; returns the answer. */
async function publish(msg, path = "/publish") {
  const r = await fetch(`${HUB()}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": ADMIN_KEY },
    body: JSON.stringify(msg),
  });
  assert.equal(r.status, 200, await r.clone().text());
  return r.json();
}

const notify = (msg) => publish(msg, "/notify");

/** Opens the console and connects it with a credential to the topics. */
async function consoleFor(page, credential, topics, extra = "") {
  await page.goto(`${HUB()}/${extra}`);
  await page.fill("#cred", credential);
  await page.fill("#topics", topics);
  await page.click("#connect");
}

// ------------------------------------------------------------------------------------------
// An app on another port: its pages open streams on the hub from a different origin.

const PAGE = `<!doctype html><meta charset=utf-8><title>app</title><body>
<script>
  window.got = []; window.errors = 0; window.opened = null;
  window.open_stream = (url, withCredentials) => {
    const es = new EventSource(url, { withCredentials });
    es.addEventListener("connected", (m) => { window.opened = JSON.parse(m.data); });
    es.onmessage = (m) => window.got.push({ id: m.lastEventId, data: m.data });
    es.onerror = () => { window.errors++; if (es.readyState === 2) window.closed = true; };
    window.es = es;
  };
</script>`;

function startApp() {
  app = createServer((req, res) => {
    if (req.url.startsWith("/login")) {
      // The app's backend signs the user in: a JWT for the hub, in an HttpOnly cookie. Cookies
      // ignore ports, so the hub on 127.0.0.1 receives it too (same site).
      const user = new URL(req.url, "http://x").searchParams.get("user");
      res.writeHead(200, {
        "set-cookie": `runnel_token=${jwt({ sub: user })}; Path=/; HttpOnly; SameSite=Lax`,
        "content-type": "text/plain",
      });
      res.end("signed in");
      return;
    }
    res.writeHead(200, { "content-type": "text/html" });
    res.end(PAGE);
  });
  return new Promise((r) => app.listen(appPort, "127.0.0.1", r));
}

// ------------------------------------------------------------------------------------------

before(async () => {
  hubPort = await freePort();
  appPort = await freePort();
  dataDir = mkdtempSync(join(tmpdir(), "runnel-browser-"));
  writeConfig();
  await startHub();
  await startApp();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await killHub("SIGTERM");
  app?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

async function newPage(viewport) {
  const ctx = await browser.newContext(viewport ? { viewport } : {});
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  return page;
}

test("the console connects, shows a published event, and an admin sees the hub", async () => {
  const page = await newPage({ width: 1280, height: 800 });
  await page.goto(`${HUB()}/`);
  await page.fill("#cred", jwt({ sub: "ops", role: "admin" }));
  await page.fill("#topics", "news");
  await page.click("#connect");
  await page.waitForSelector("#state.open");
  await page.fill("#dest", "news");
  await page.fill("#evtype", "");
  await page.fill("#data", '{"hello": "browser"}');
  await page.click("#publish");
  await page.waitForFunction(() => document.querySelector("#result").textContent.includes("published"));
  const row = page.locator("#log tr.event").first();
  await row.waitFor();
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[3], "news", `topic column: ${cells}`);
  // JSON data: a one-line preview, pretty-printed when unfolded.
  assert.equal(await row.locator("td.data .preview").textContent(), '{"hello":"browser"}');
  assert.equal(await row.locator("td.data pre").textContent(), '{\n  "hello": "browser"\n}');
  const published = await page.textContent("#result");
  assert.ok(published.includes(cells[1]), `${published} names the id ${cells[1]}`);
  // Admin: charts and the connection list come from /stats and /connections.
  await page.waitForSelector("#admin:not([hidden])");
  await page.waitForFunction(() => document.querySelectorAll("#conns tbody tr").length >= 1);
  await page.waitForFunction(() => document.querySelector("#nconn").textContent === "1");
  for (let i = 0; i < 3; i++) {
    await publish({ topic: "news", event: "update", data: { n: i } });
  }
  await page.waitForFunction(() => document.querySelectorAll("#log tr.event").length >= 4);
  // The close button ends the stream: the console says so.
  await page.click("#conns tbody tr button");
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#log tr.note")].some((r) => r.textContent.includes("closed_by_admin")));
  await page.context().close();
});

test("EventSource with an HttpOnly cookie set by the hub's origin", async () => {
  const page = await newPage();
  await page.goto(`${HUB()}/`);
  const token = jwt({ sub: "carol" });
  const answer = await page.evaluate(async (t) => {
    const r = await fetch("/auth/cookie", { method: "POST", headers: { authorization: `Bearer ${t}` } });
    return { status: r.status, body: await r.json(), visible: document.cookie };
  }, token);
  assert.equal(answer.status, 200);
  assert.equal(answer.body.user, "carol");
  assert.ok(!answer.visible.includes("runnel_token"), "HttpOnly: scripts cannot read it");
  const info = await page.evaluate(() => new Promise((res, rej) => {
    const es = new EventSource("/events?topic=news");
    window.es = es;
    window.got = [];
    es.addEventListener("connected", (m) => res(JSON.parse(m.data)));
    es.onmessage = (m) => window.got.push(m.data);
    es.onerror = () => rej(new Error("stream failed"));
  }));
  assert.equal(info.user, "carol");
  await publish({ user: "carol", data: "just for carol" });
  await page.waitForFunction(() => window.got.includes("just for carol"));
  await page.context().close();
});

test("cross-origin with withCredentials: the allowed origin reads, a foreign one is refused", async () => {
  const page = await newPage();
  await page.goto(`http://127.0.0.1:${appPort}/`);
  await page.evaluate(() => fetch("/login?user=dave"));
  await page.evaluate((u) => window.open_stream(u, true), `${HUB()}/events?topic=news`);
  await page.waitForFunction(() => window.opened !== null);
  assert.equal(await page.evaluate(() => window.opened.user), "dave", "the cookie went along");
  const sent = await publish({ topic: "news", data: "cross-origin" });
  await page.waitForFunction(() => window.got.some((e) => e.data === "cross-origin"));
  assert.equal(await page.evaluate(() => window.got.at(-1).id), sent.id);

  // localhost is another origin (and another site), not in cors.allow_origins. Even for an
  // anonymous topic, which needs no credentials at all, the browser gets no CORS answer.
  const foreign = await newPage();
  await foreign.goto(`http://localhost:${appPort}/`);
  await foreign.evaluate((u) => window.open_stream(u, true), `${HUB()}/events?topic=public`);
  await foreign.waitForFunction(() => window.errors > 0);
  assert.equal(await foreign.evaluate(() => window.opened), null);
  // The same anonymous stream from the allowed origin works.
  await page.evaluate((u) => { window.es.close(); window.opened = null; window.open_stream(u, true); },
    `${HUB()}/events?topic=public`);
  await page.waitForFunction(() => window.opened !== null);
  await page.context().close();
  await foreign.context().close();
});

test("after the hub is killed and restarted, pages resume in order without duplicates", async () => {
  // A plain EventSource (the browser's own reconnect, with Last-Event-ID) and the console
  // (runnel.js) watch the same topic.
  const plain = await newPage();
  await plain.goto(`http://127.0.0.1:${appPort}/`);
  await plain.evaluate((u) => window.open_stream(u, false), `${HUB()}/events?topic=public`);
  await plain.waitForFunction(() => window.opened !== null);
  const console_ = await newPage();
  await console_.goto(`${HUB()}/?topics=public&connect=1`);
  await console_.waitForSelector("#state.open");

  const ids = [];
  for (let i = 1; i <= 3; i++) ids.push((await publish({ topic: "public", data: `before ${i}` })).id);
  await plain.waitForFunction(() => window.got.length === 3);
  await console_.waitForFunction(() => document.querySelectorAll("#log tr.event").length === 3);
  await killHub("SIGKILL");
  await console_.waitForSelector("#state.reconnecting");
  await startHub();
  // Published before either page is back (the hub asks for 1.5 s between attempts).
  for (let i = 1; i <= 4; i++) ids.push((await publish({ topic: "public", data: `after ${i}` })).id);
  await plain.waitForFunction(() => window.got.length >= 7, null, { timeout: 20000 });
  await sleep(500); // a duplicate would arrive now
  const got = await plain.evaluate(() => window.got);
  assert.deepEqual(got.map((e) => e.id), ids, "every event once, in order");
  assert.deepEqual(got.map((e) => e.data).slice(3), ["after 1", "after 2", "after 3", "after 4"]);

  await console_.waitForSelector("#state.open", { timeout: 20000 });
  await console_.waitForFunction(() => document.querySelectorAll("#log tr.event").length >= 7);
  await sleep(500);
  const rows = await console_.$$eval("#log tr.event", (trs) =>
    trs.map((tr) => tr.children[1].textContent).reverse());
  assert.deepEqual(rows, ids, "the console shows each event once, in order");
  const notes = await console_.$$eval("#log tr.note", (trs) => trs.map((t) => t.textContent).join("\n"));
  assert.ok(notes.includes(`resuming after ${ids[2]}`), `${notes}\nids: ${ids}`);
  await plain.context().close();
  await console_.context().close();
});

test("runnel.js: exchange-token flow, typed handlers, session topics", async () => {
  const page = await newPage();
  const urls = [];
  page.on("request", (r) => urls.push(r.url()));
  await page.goto(`${HUB()}/`);
  const token = jwt({ sub: "erin" });
  await page.evaluate(async (t) => {
    const { Runnel } = await import("/runnel.js");
    window.got = [];
    const hub = new Runnel({ topics: ["news"], token: t });
    window.hub = hub;
    hub.on("update", (ev) => window.got.push(ev));
    await new Promise((r) => hub.on("open", r));
  }, token);
  const stream = urls.find((u) => u.includes("/events?"));
  assert.ok(stream.includes("token="), stream);
  assert.ok(!stream.includes(token), "the long-lived JWT never goes into a URL");
  assert.ok(urls.some((u) => u.endsWith("/auth/sse-token")));
  const sent = await publish({ topic: "news", event: "update", data: { price: 42 } });
  await page.waitForFunction(() => window.got.length === 1);
  const ev = await page.evaluate(() => window.got[0]);
  assert.deepEqual(ev.data, { price: 42 }, "JSON data arrives parsed");
  assert.equal(ev.id, sent.id);
  assert.equal(ev.type, "update");
  // A session topic reaches the open stream without a new connection.
  const topics = await page.evaluate(async () => (await window.hub.subscribe(["alerts"])).topics);
  assert.ok(topics.includes("alerts"), topics);
  await publish({ topic: "alerts", event: "update", data: "fire drill" });
  await page.waitForFunction(() => window.got.length === 2);
  assert.equal(await page.evaluate(() => window.got[1].data), "fire drill");
  assert.equal(urls.filter((u) => u.includes("/events?")).length, 1, "still one stream");
  await page.context().close();
});

test("runnel.js over WebSocket: receives, publishes over the socket, survives a hub restart without loss", async () => {
  const page = await newPage();
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  await page.goto(`${HUB()}/`);
  const token = jwt({ sub: "wes", publish: ["public"] });
  await page.evaluate(async (t) => {
    const { Runnel } = await import("/runnel.js");
    window.got = [];
    window.states = [];
    const hub = new Runnel({ topics: ["public"], token: t, transport: "websocket", minRetry: 200 });
    window.hub = hub;
    hub.on("message", (ev) => window.got.push(ev));
    hub.on("state", (s) => window.states.push(s));
    await new Promise((r) => hub.on("open", r));
  }, token);
  assert.ok(sockets[0].startsWith(`ws://127.0.0.1:${hubPort}/ws?`), sockets[0]);
  assert.ok(!sockets[0].includes(token), "the long-lived JWT never goes into a URL");
  // Published over the socket: the ack carries the id, and the event comes back.
  const ack = await page.evaluate(() => window.hub.publish({ topic: "public", data: { from: "page" } }));
  await page.waitForFunction(() => window.got.length === 1);
  const first = await page.evaluate(() => window.got[0]);
  assert.equal(first.id, ack.id);
  assert.deepEqual(first.data, { from: "page" }, "JSON data as published");
  // A permission error is the hub's, as a RunnelError.
  const refused = await page.evaluate(() =>
    window.hub.publish({ topic: "news", data: 1 }).then(() => null, (e) => [e.status, e.code]));
  assert.deepEqual(refused, [403, "forbidden"]);
  const ids = [ack.id];
  for (let i = 1; i <= 3; i++) ids.push((await publish({ topic: "public", data: `before ${i}` })).id);
  await page.waitForFunction(() => window.got.length === 4);
  await killHub("SIGKILL");
  await page.waitForFunction(() => window.hub.state === "reconnecting");
  await startHub();
  for (let i = 1; i <= 3; i++) ids.push((await publish({ topic: "public", data: `after ${i}` })).id);
  await page.waitForFunction(() => window.got.length >= 7, null, { timeout: 20000 });
  await sleep(500); // a duplicate would arrive now
  const got = await page.evaluate(() => window.got.map((e) => e.id));
  assert.deepEqual(got, ids, "every event once, in order, across the restart");
  assert.ok(sockets.length >= 2, "it reconnected");
  assert.ok(sockets.at(-1).includes(`last_event_id=${ids[3]}`), sockets.at(-1));
  await page.context().close();
});

test("the console reads over a WebSocket with ?transport=websocket", async () => {
  const page = await newPage();
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  await page.goto(`${HUB()}/?topics=public&connect=1&transport=websocket`);
  await page.waitForSelector("#state.open");
  const sent = await publish({ topic: "public", data: "over the socket" });
  await page.waitForFunction((id) => [...document.querySelectorAll("#log tr.event")]
    .some((tr) => tr.textContent.includes(id)), sent.id);
  const row = await page.$$eval("#log tr.event", (trs, id) =>
    trs.find((tr) => tr.textContent.includes(id)).textContent, sent.id);
  assert.ok(row.includes("over the socket"), row);
  assert.equal(sockets.length, 1);
  assert.ok(sockets[0].includes("/ws?topic=public"), sockets[0]);
  await page.context().close();
});

test("a page from a foreign origin cannot open a WebSocket; an allowed origin can", async () => {
  const open = (page, url) => page.evaluate((u) => new Promise((r) => {
    const ws = new WebSocket(u);
    ws.onmessage = (m) => { r(JSON.parse(m.data).type); ws.close(); };
    ws.onerror = () => r("refused");
  }), url);
  const url = `ws://127.0.0.1:${hubPort}/ws?topic=public`;
  const foreign = await newPage();
  await foreign.goto(`http://localhost:${appPort}/`);
  assert.equal(await open(foreign, url), "refused");
  const allowed = await newPage();
  await allowed.goto(`http://127.0.0.1:${appPort}/`);
  assert.equal(await open(allowed, url), "connected");
  const own = await newPage();
  await own.goto(`${HUB()}/`);
  assert.equal(await open(own, url), "connected");
  for (const p of [foreign, allowed, own]) await p.context().close();
});

test("runnel.js reports an expired token as an auth failure, not a network drop", async () => {
  const page = await newPage();
  await page.goto(`${HUB()}/`);
  const token = jwt({ sub: "frank", exp: now() + 3 });
  const result = await page.evaluate(async (t) => {
    const { Runnel } = await import("/runnel.js");
    const seen = [];
    const hub = new Runnel({ topics: ["news"], token: t, minRetry: 200 });
    hub.on("closed", (c) => seen.push(`closed:${c.reason}`));
    hub.on("disconnected", (e) => seen.push(`disconnected:${e.status}`));
    const failure = await new Promise((res) => hub.on("authfailure", res));
    return { status: failure.status, isAuth: failure.isAuth, state: hub.state, seen };
  }, token);
  assert.equal(result.status, 401);
  assert.ok(result.isAuth);
  assert.equal(result.state, "auth-failed");
  assert.ok(result.seen.includes("closed:token_expired"), result.seen.join());
  assert.ok(!result.seen.some((s) => s.startsWith("disconnected")), result.seen.join());
  // And a real drop is told apart: the hub down is "disconnected", with status 0.
  const drop = await page.evaluate(async (t) => {
    const { Runnel } = await import("/runnel.js");
    const hub = new Runnel({ topics: ["news"], token: t, minRetry: 200 });
    await new Promise((r) => hub.on("open", r));
    window.dropHub = hub;
    return true;
  }, jwt({ sub: "gina" }));
  assert.ok(drop);
  const waiting = page.evaluate(() => new Promise((res) => window.dropHub.on("disconnected", (e) => res(e.status))));
  await killHub("SIGKILL");
  assert.equal(await waiting, 0);
  await startHub();
  await page.waitForFunction(() => window.dropHub.state === "open", null, { timeout: 20000 });
  await page.context().close();
});

test("over HTTPS (HTTP/2) ten EventSources to one origin all receive; HTTP/1.1 stalls at six", async () => {
  // A second hub with a certificate from `runnel cert --self-signed`.
  const dir = mkdtempSync(join(tmpdir(), "runnel-tls-"));
  execFileSync(BIN, ["cert", "--self-signed", "--hosts", "127.0.0.1,localhost",
    "--cert", join(dir, "hub.crt"), "--key", join(dir, "hub.key")]);
  const port = await freePort();
  writeFileSync(join(dir, "runnel.toml"), hubToml(port, dir, `
[tls]
cert = "${dir}/hub.crt"
key = "${dir}/hub.key"
`));
  const tlsHub = spawn(BIN, ["serve", "-c", join(dir, "runnel.toml")], { stdio: ["ignore", "inherit", "inherit"] });
  const openTen = (page) => page.evaluate(() => {
    window.opened = 0;
    window.got = 0;
    for (let i = 0; i < 10; i++) {
      const es = new EventSource(`/events?topic=public&n=${i}`);
      es.addEventListener("connected", () => window.opened++);
      es.onmessage = () => window.got++;
    }
  });
  try {
    // The browser trusts this certificate only in this context (as a user who accepted it).
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await ctx.newPage();
    for (let i = 0; ; i++) {
      try {
        await page.goto(`https://127.0.0.1:${port}/`);
        break;
      } catch (e) {
        if (i > 100) throw e;
        await sleep(100);
      }
    }
    const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
    assert.equal(protocol, "h2");
    await openTen(page);
    await page.waitForFunction(() => window.opened === 10, null, { timeout: 10000 });
    const r = await page.evaluate(async (key) => (await fetch("/publish", {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": key },
      body: JSON.stringify({ topic: "public", data: "to all ten" }),
    })).json(), ADMIN_KEY);
    assert.equal(r.delivered, 10);
    await page.waitForFunction(() => window.got === 10);
    await ctx.close();

    // The same page over plain HTTP/1.1: the browser opens six connections to the origin,
    // and the other four streams wait.
    const plain = await newPage();
    await plain.goto(`${HUB()}/`);
    await openTen(plain);
    await plain.waitForFunction(() => window.opened === 6);
    await sleep(2000);
    assert.equal(await plain.evaluate(() => window.opened), 6);
    await plain.context().close();
  } finally {
    const exited = new Promise((r) => tlsHub.once("exit", r));
    tlsHub.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the console shows the topics' history on connect, then live events, each once", async () => {
  const topic = "hist";
  const json = { room: "kitchen", temp: 21.5, readings: [21.4, 21.5] };
  const long = "a long line of text, ".repeat(20);
  const ids = [];
  ids.push((await publish({ topic, data: json })).id);
  ids.push((await publish({ topic, event: "update", data: long })).id);
  await publish({ topic, event: "unlisted", data: "a type the console does not show" });
  ids.push((await publish({ topic, data: "short text" })).id);
  const page = await newPage({ width: 1280, height: 800 });
  await consoleFor(page, jwt({ sub: "ivy" }), topic);
  await page.waitForSelector("#log tr.hist");
  const idsOf = (sel) => page.$$eval(sel, (trs) => trs.map((tr) => tr.children[1].textContent));
  assert.deepEqual(await idsOf("#log tr.event.past"), [...ids].reverse(), "newest first, of the shown types");
  assert.match(await page.textContent("#log tr.hist"), /history: 3 earlier events/);
  const past = page.locator("#log tr.event.past");
  // JSON folded, pretty-printed with a 2-space indent when unfolded.
  const jsonRow = past.nth(2).locator("td.data details");
  assert.equal(await jsonRow.evaluate((d) => d.open), false);
  assert.equal(await jsonRow.locator(".preview").textContent(), JSON.stringify(json));
  assert.equal(await jsonRow.locator("pre").textContent(), JSON.stringify(json, null, 2));
  assert.equal(await jsonRow.locator("pre").isVisible(), false, "folded");
  // Long text folded to a one-line preview, the whole text when unfolded.
  const textRow = past.nth(1).locator("td.data details");
  assert.equal(await textRow.locator("pre").isVisible(), false, "folded");
  const preview = await textRow.locator(".preview").textContent();
  assert.ok(preview.length < long.length && long.startsWith(preview.slice(0, -1)), preview);
  const folded = (await textRow.boundingBox()).height;
  await textRow.locator("summary").click();
  assert.equal(await textRow.locator("pre").textContent(), long);
  assert.ok((await textRow.boundingBox()).height > 2 * folded, "unfolding shows the whole text");
  // Short text stays as it is.
  assert.equal(await past.nth(0).locator("td.data").textContent(), "short text");
  // History rows carry the events' own times.
  assert.ok(await past.nth(0).locator("td").first().getAttribute("title"));
  // Live events follow, above the history, and nothing shows twice.
  const live = (await publish({ topic, data: "live" })).id;
  await page.waitForFunction((id) => document.querySelector("#log tr.event td:nth-child(2)")?.textContent === id, live);
  await sleep(300);
  assert.deepEqual(await idsOf("#log tr.event"), [live, ...[...ids].reverse()]);
  assert.equal(await page.textContent("#count"), "(4)");
  await page.context().close();
});

test("notification events show as toasts, which auto-hide after their duration or wait to be closed", async () => {
  const page = await newPage({ width: 1280, height: 800 });
  await consoleFor(page, jwt({ sub: "jo" }), "alerts/door");
  await page.waitForSelector("#state.open");
  assert.equal(await page.$eval("#toasts", (t) => getComputedStyle(t).pointerEvents), "none",
    "the stack lets clicks through to the page");
  await notify({ topic: "alerts/door", title: "Door", content: "front door opened", type: "warning",
    auto_hide: true, duration: 1500 });
  const toast = page.locator("#toasts .toast");
  await toast.waitFor();
  const seenAt = Date.now();
  assert.match(await toast.getAttribute("class"), /\bwarning\b/);
  assert.equal(await toast.locator("strong").textContent(), "Door");
  assert.equal(await toast.locator("p").textContent(), "front door opened");
  // In the log too.
  await page.waitForFunction(() => [...document.querySelectorAll("#log tr.event")]
    .some((tr) => tr.children[2].textContent === "notification" && tr.textContent.includes("front door opened")));
  await sleep(800);
  assert.equal(await toast.count(), 1, "still shown before its duration");
  await toast.waitFor({ state: "detached", timeout: 3000 });
  assert.ok(Date.now() - seenAt >= 1000, `hidden after ${Date.now() - seenAt} ms`);
  // Without auto_hide it stays, with a close button; toasts stack, newest first.
  await notify({ topic: "alerts/door", title: "Backup failed", content: "disk full", type: "error" });
  await notify({ topic: "alerts/door", title: "Backup retried", type: "success" });
  await page.waitForFunction(() => document.querySelectorAll("#toasts .toast").length === 2);
  assert.deepEqual(await page.$$eval("#toasts .toast strong", (s) => s.map((e) => e.textContent)),
    ["Backup retried", "Backup failed"]);
  await sleep(2000);
  assert.equal(await toast.count(), 2, "no auto_hide: they stay");
  await page.locator("#toasts .toast.error").getByRole("button", { name: "dismiss" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#toasts .toast").length === 1);
  assert.equal(await page.textContent("#toasts .toast strong"), "Backup retried");
  await page.context().close();
});

test("ntfy messages show as messages: title, text, priority, tags, link, actions; the raw JSON stays", async () => {
  const topic = "ntfy/nas";
  const page = await newPage({ width: 1280, height: 800 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // One published before the console opens: the history shows it the same way.
  const earlier = await publish({ topic, event: "message",
    data: { message: "nightly check passed", title: "NAS", priority: 2, tags: ["white_check_mark"] } });
  await consoleFor(page, jwt({ sub: "nia" }), topic);
  await page.waitForSelector("#log tr.hist");
  const rowOf = async (id) => {
    const row = page.locator(`#log tr.event:has(td:nth-child(2):text-is("${id}"))`);
    await row.waitFor();
    return row;
  };
  const past = await rowOf(earlier.id);
  assert.match(await past.getAttribute("class"), /\bpast\b/);
  assert.equal(await past.locator(".ntfy .title").textContent(), "NAS");
  assert.equal(await past.locator(".ntfy .msg").textContent(), "nightly check passed");
  assert.equal(await past.locator(".ntfy .prio").textContent(), "low (2)");
  assert.equal(await past.locator(".ntfy .emoji").textContent(), "✅");

  const data = {
    message: "Backup done\n<b>42 GB</b> in **3 min**",
    title: "NAS",
    priority: 5,
    tags: ["warning", "backup"],
    click: "https://example.com/run/1",
    icon: "https://example.com/i.png",
    actions: [
      { action: "view", label: "Open", url: "https://example.com/logs" },
      { action: "http", label: "Retry", url: "https://example.com/retry" },
      { action: "view", label: "Sneaky", url: "javascript:alert(2)" },
    ],
    content_type: "text/markdown",
  };
  const sent = await publish({ topic, event: "message", data });
  const row = await rowOf(sent.id);
  assert.equal(await row.locator("td:nth-child(3)").textContent(), "message");
  const view = row.locator("td.data.ntfy");
  assert.equal(await view.locator(".title").textContent(), "NAS");
  // The text as text: markup and markdown shown as written, no element made of them.
  assert.equal(await view.locator(".msg").textContent(), data.message);
  assert.equal(await view.locator(".msg *").count(), 0);
  const prio = view.locator(".prio");
  assert.equal(await prio.textContent(), "urgent (5)");
  const bg = (loc) => loc.evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.equal(await bg(prio), "rgb(207, 34, 46)", "urgent stands out");
  assert.notEqual(await bg(past.locator(".prio")), await bg(prio));
  // A tag with an emoji shows as the emoji, the others as chips.
  assert.deepEqual(await view.locator(".emoji").allTextContents(), ["⚠️"]);
  assert.equal(await view.locator(".emoji").getAttribute("title"), "warning");
  assert.deepEqual(await view.locator(".tag").allTextContents(), ["backup"]);
  const click = view.locator("a.click");
  assert.equal(await click.getAttribute("href"), "https://example.com/run/1");
  assert.equal(await click.getAttribute("target"), "_blank");
  assert.equal(await click.getAttribute("rel"), "noopener noreferrer");
  // view actions are links (http(s) only); the others are named.
  const actions = view.locator("a.action");
  assert.deepEqual(await actions.allTextContents(), ["Open"]);
  assert.equal(await actions.getAttribute("href"), "https://example.com/logs");
  const meta = await view.locator(".meta").textContent();
  assert.ok(meta.includes("Retry (http)"), meta);
  assert.ok(meta.includes("Sneaky: javascript:alert(2) (not linked)"), meta);
  assert.equal(await view.locator("img").count(), 0, "the icon is not loaded");
  // The whole data, folded, as before.
  const raw = view.locator("details");
  assert.equal(await raw.evaluate((d) => d.open), false);
  assert.equal(await raw.locator(".preview").textContent(), "raw JSON");
  assert.equal(await raw.locator("pre").textContent(), JSON.stringify(data, null, 2));

  // A click URL that is not http(s) is no link.
  const bad = await publish({ topic, event: "message",
    data: { message: "do not click", click: "javascript:alert(1)" } });
  const badRow = await rowOf(bad.id);
  assert.equal(await badRow.locator(".ntfy .msg").textContent(), "do not click");
  assert.equal(await badRow.locator("a").count(), 0);
  assert.equal(await page.locator('#log a[href="javascript:alert(1)"]').count(), 0);
  assert.equal(await page.locator('#log a[href^="javascript:"]').count(), 0);
  assert.equal(await badRow.locator(".ntfy .head, .ntfy .prio").count(), 0, "default priority: no badge");

  // Not ntfy-shaped: shown as before.
  const plain = await publish({ topic, data: { hello: "plain" } });
  const typed = await publish({ topic, event: "update", data: { message: "an update, not a message" } });
  const number = await publish({ topic, event: "message", data: { message: 42 } });
  const text = await publish({ topic, event: "message", data: "just text" });
  for (const [id, preview] of [[plain.id, '{"hello":"plain"}'],
    [typed.id, '{"message":"an update, not a message"}'], [number.id, '{"message":42}']]) {
    const r = await rowOf(id);
    assert.equal(await r.locator("td.data").getAttribute("class"), "data");
    assert.equal(await r.locator("td.data .preview").textContent(), preview);
  }
  const textRow = await rowOf(text.id);
  assert.equal(await textRow.locator("td.data").textContent(), "just text");
  assert.equal(await page.locator("#log .ntfy").count(), 3);
  assert.deepEqual(errors, []);
  await page.context().close();
});

test("browser notifications: permission asked on the click only, shown while the tab is hidden", async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // A stand-in for the Notification API that records what the page asks and shows, and a
  // document.hidden the test controls.
  await ctx.addInitScript(() => {
    window.asked = 0;
    window.shown = [];
    window.fakeHidden = false;
    class FakeNotification {
      static permission = "default";
      static requestPermission() {
        window.asked++;
        FakeNotification.permission = "granted";
        return Promise.resolve("granted");
      }
      constructor(title, options) {
        window.shown.push({ title, ...options });
      }
    }
    window.Notification = FakeNotification;
    Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => window.fakeHidden });
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await consoleFor(page, jwt({ sub: "kim" }), "alerts/kim");
  await page.waitForSelector("#state.open");
  await sleep(300);
  assert.equal(await page.evaluate(() => window.asked), 0, "not asked on load or connect");
  assert.equal(await page.isChecked("#sysnotify"), false);
  await notify({ topic: "alerts/kim", title: "before", content: "not enabled yet" });
  await page.locator("#toasts .toast").first().waitFor();
  await page.click("#sysnotify");
  await page.waitForFunction(() => window.asked === 1);
  assert.equal(await page.isChecked("#sysnotify"), true);
  assert.match(await page.textContent("#notifymsg"), /^on/);
  // Visible: the toast is enough.
  await notify({ topic: "alerts/kim", title: "visible", content: "a toast only" });
  await page.waitForFunction(() => document.querySelectorAll("#toasts .toast").length === 2);
  // Hidden: a system notification.
  await page.evaluate(() => { window.fakeHidden = true; });
  const sent = await notify({ topic: "alerts/kim", title: "Door", content: "opened while away", type: "info" });
  await page.waitForFunction(() => window.shown.length > 0);
  await sleep(300);
  assert.deepEqual(await page.evaluate(() => window.shown), [{ title: "Door", body: "opened while away", tag: sent.id }]);
  assert.equal(await page.evaluate(() => window.asked), 1, "asked once");
  // Off again: none.
  await page.click("#sysnotify");
  await notify({ topic: "alerts/kim", title: "off", content: "not shown" });
  await page.waitForFunction(() => [...document.querySelectorAll("#log tr.event")].some((tr) => tr.textContent.includes("not shown")));
  assert.equal(await page.evaluate(() => window.shown.length), 1);
  await ctx.close();
});

test("the console on a 390 px phone: nothing scrolls sideways, every connections column in view, readable charts", async () => {
  const page = await newPage({ width: 390, height: 844 });
  await consoleFor(page, jwt({ sub: "phone-admin-with-a-long-name", role: "admin" }),
    "phone/a, phone/b, sensors/living-room/temperature/celsius");
  await page.waitForSelector("#state.open");
  await publish({ topic: "phone/a", data: { reading: 21.5, note: "z".repeat(300) } });
  await publish({ topic: "phone/a", data: "w".repeat(500) });
  await page.waitForFunction(() => document.querySelectorAll("#log tr.event").length === 2);
  await page.waitForSelector("#admin:not([hidden])");
  await page.waitForFunction(() => document.querySelectorAll("#conns tbody tr").length >= 1);
  await sleep(2500); // a few chart points
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth),
    "the page does not scroll sideways");
  const inView = async (loc, what) => {
    await loc.scrollIntoViewIfNeeded();
    const b = await loc.boundingBox();
    assert.ok(b && b.width > 0, `${what} is shown`);
    assert.ok(b.x >= 0 && b.x + b.width <= 390.5, `${what} within the screen's width: ${JSON.stringify(b)}`);
  };
  // Every column of the connections table, its header and a row's cells, within the width
  // of the screen once scrolled to (measured at once: the table is refreshed every second).
  const table = await page.evaluate(() => {
    const t = document.querySelector("#conns");
    t.scrollIntoView();
    const box = (e) => { const r = e.getBoundingClientRect(); return { text: e.textContent, x: r.x, right: r.right, width: r.width }; };
    return {
      heads: [...t.tHead.rows[0].cells].map(box),
      cells: [...t.tBodies[0].rows[0].cells].map(box),
      fits: t.parentElement.scrollWidth <= t.parentElement.clientWidth,
    };
  });
  assert.deepEqual(table.heads.map((h) => h.text), ["id", "user", "ip", "topics", "action"]);
  assert.equal(table.cells.length, 5);
  for (const c of [...table.heads, ...table.cells]) {
    assert.ok(c.width > 0 && c.x >= 0 && c.right <= 390.5, `within the screen's width: ${JSON.stringify(c)}`);
  }
  assert.ok(table.fits, "the table fits its box");
  for (const sel of ["#connect", "#sysnotify", "#history", "#publish", "#log tr.event td.data", "#cconn", "#crate"]) {
    await inView(page.locator(sel).first(), sel);
  }
  // Charts: the line between 15% and 85% of the height, a flat one in the middle, labelled.
  const charts = await page.$$eval(".plot", (plots) => plots.map((p) => ({
    ys: p.querySelector("polyline").getAttribute("points").split(" ").map((xy) => Number(xy.split(",")[1])),
    labels: [...p.querySelectorAll(".ylab span")].map((s) => ({ top: s.style.top, text: s.textContent })),
  })));
  assert.equal(charts.length, 2);
  for (const c of charts) {
    assert.ok(c.ys.length >= 2 && c.ys.every((y) => y >= 15 && y <= 85), `off the border: ${c.ys}`);
    if (new Set(c.ys).size === 1) {
      assert.ok(c.ys.every((y) => y === 50), `a flat line in the middle: ${c.ys}`);
      assert.deepEqual(c.labels.map((l) => l.top), ["50%"]);
    } else {
      assert.equal(Math.min(...c.ys), 15);
      assert.equal(Math.max(...c.ys), 85);
      assert.deepEqual(c.labels.map((l) => l.top), ["15%", "85%"]);
    }
    assert.ok(c.labels.every((l) => l.text !== ""), "labelled");
  }
  await page.context().close();
});

test("a refused stream shows the hub's reason", async () => {
  const page = await newPage();
  // A token that may read news only, asking for another topic: 403.
  await consoleFor(page, jwt({ sub: "lee", subscribe: ["news"] }), "secret");
  await page.waitForSelector("#state.auth-failed");
  let msg = await page.textContent("#connmsg");
  assert.equal(msg, 'refused (403): you may not read topic "secret"');
  assert.ok(await page.$eval("#connmsg", (p) => p.classList.contains("error")));
  assert.ok((await page.textContent("#log")).includes('you may not read topic "secret"'));
  // Anonymous, a topic that needs credentials: 401, with the hub's words.
  await page.fill("#cred", "");
  await page.fill("#topics", "news");
  await page.click("#connect");
  await page.waitForSelector("#state.auth-failed");
  msg = await page.textContent("#connmsg");
  assert.equal(msg, 'refused (401): you may not read topic "news": credentials are required');
  // And runnel.js says the same to any page.
  const err = await page.evaluate(async (t) => {
    const { Runnel } = await import("/runnel.js");
    const hub = new Runnel({ topics: ["secret"], token: t });
    const e = await new Promise((res) => hub.on("authfailure", res));
    return { status: e.status, code: e.code, message: e.message };
  }, jwt({ sub: "lee", subscribe: ["news"] }));
  assert.deepEqual(err, { status: 403, code: "forbidden", message: 'you may not read topic "secret"' });
  await page.context().close();
});

// The screenshots in docs/ (console.png, console-phone.png): kept in SHOTS=dir, else taken in a
// temporary directory and checked (a page that stalls with a toast or an unfolded row fails).
test("console screenshots", async () => {
  const dir = process.env.SHOTS || mkdtempSync(join(tmpdir(), "runnel-shots-"));
  const readings = [
    { topic: "home/kitchen", event: "update", data: { temperature: 21.4, humidity: 48 } },
    { topic: "home/door", data: "front door closed" },
    { topic: "home/kitchen", event: "update", data: { temperature: 21.6, humidity: 47 } },
    { topic: "home/garage", event: "update", data: { door: "closed", light: false, battery: 0.82 } },
  ];
  for (const r of readings) await publish(r);
  const admin = jwt({ sub: "ops", role: "admin" });
  const open = async (viewport) => {
    const page = await newPage(viewport);
    await consoleFor(page, admin, "home/*");
    await page.waitForSelector("#log tr.hist");
    return page;
  };
  const desk = await open({ width: 1280, height: 800 });
  const phone = await open({ width: 390, height: 844 });
  await publish({ topic: "home/kitchen", event: "update", data: { temperature: 21.7, humidity: 47 } });
  await publish({ topic: "home/door", data: "front door opened" });
  await notify({ topic: "home/door", title: "Front door", content: "opened at 18:02", type: "warning" });
  for (const page of [desk, phone]) {
    await page.waitForFunction(() => document.querySelectorAll("#toasts .toast").length === 1);
    await page.locator("#log tr.event.past td.data summary").first().click();
  }
  await sleep(3000); // a few chart points
  await desk.screenshot({ path: join(dir, "console.png") });
  await phone.evaluate(() => window.scrollTo(0, document.querySelector("#s-log").offsetTop - 8));
  await phone.screenshot({ path: join(dir, "console-phone.png") });
  await desk.context().close();
  await phone.context().close();
  for (const [name, width] of [["console.png", 1280], ["console-phone.png", 390]]) {
    const png = readFileSync(join(dir, name));
    assert.equal(png.readUInt32BE(16), width, name);
  }
  if (!process.env.SHOTS) rmSync(dir, { recursive: true });
});
