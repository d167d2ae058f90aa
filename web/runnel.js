// runnel.js: a small browser client for a runnel hub. An ES module without dependencies,
// served by the hub at /runnel.js.
//
//   import { Runnel } from "/runnel.js";
//   const hub = new Runnel({ topics: ["news"], token: jwtOrApiKey });
//   hub.on("update", (ev) => render(ev.data));        // typed handlers, JSON parsed
//   hub.on("authfailure", (e) => login());              // 401/403, told apart from a drop
//   await hub.subscribe(["alerts"]);                    // session topics, same stream
//
// It wraps EventSource and adds what EventSource lacks:
// - a long-lived token never goes into a URL: it is exchanged for a single-use one
//   (POST /auth/sse-token) before every (re)connect;
// - reconnects are its own: after an error it probes the stream URL with a fetch of
//   HEAD /events, which sees the status EventSource hides, then reads the hub's reason
//   (the JSON error of a GET) when it refuses. 401/403 is an auth failure (it stops and
//   says why); a network error, a 429 or a 5xx is a drop (it retries with backoff, and
//   no sooner than the hub's Retry-After). It resumes after the last
//   event it saw, so nothing is missed and nothing repeats;
// - session helpers (POST /subscribe, /unsubscribe) and a publish helper.
//
// With `transport: "websocket"` the same handlers are fed from GET /ws instead: events,
// `open`, `reset`, `closed`, `shutdown` alike. `publish()`, `subscribe()` and
// `unsubscribe()` then go over the socket (answered in order, the hub's error as a
// RunnelError); subscribe and unsubscribe change this connection (and are named again on
// every reconnect). Reconnects are the same: the same probe, backoff and exact resume after
// the last id seen; an event seen already (by id) is not handed on twice.

// The hub's control events, and the names of this client's own notifications: neither is
// an event type to listen for on the stream.
const CONTROL = ["connected", "reset", "closed", "shutdown"];
const LOCAL = ["open", "state", "authfailure", "disconnected"];
const notStreamType = (t) => CONTROL.includes(t) || LOCAL.includes(t);

/** An error from the hub: `status` is the HTTP status (0 for a network error), `message`
 *  and `code` the hub's own (its JSON error), `retryAfter` its Retry-After in seconds. */
export class RunnelError extends Error {
  constructor(message, status = 0, code = "network") {
    super(message);
    this.name = "RunnelError";
    this.status = status;
    this.code = code;
    this.retryAfter = 0;
  }
  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

export class Runnel {
  /**
   * @param {object} o
   * @param {string} [o.url]            the hub's base URL; "" (default) is this page's origin
   * @param {string[]} [o.topics]       topics the stream names
   * @param {string|function} [o.token] a JWT or API key, or a function (may be async) that
   *                                    returns one; none = the cookie or anonymous access
   * @param {boolean} [o.withCredentials] send cookies to another origin (CORS)
   * @param {string} [o.lastEventId]    resume after this id
   * @param {boolean} [o.envelope]      ask for {"topics", "data"} data (shows topics)
   * @param {number} [o.minRetry]       first reconnect delay in ms (doubles up to maxRetry)
   * @param {number} [o.maxRetry]
   * @param {boolean} [o.start]         connect at once (default true)
   * @param {string} [o.transport]      "sse" (default) or "websocket"
   */
  constructor(o = {}) {
    this.url = (o.url || "").replace(/\/+$/, "");
    this.topics = [...(o.topics || [])];
    this.token = o.token || null;
    this.withCredentials = !!o.withCredentials;
    this.lastEventId = o.lastEventId || null;
    this.envelope = !!o.envelope;
    this.minRetry = o.minRetry ?? 500;
    this.maxRetry = o.maxRetry ?? 15000;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" | "auth-failed" */
    this.state = "idle";
    this.connectionId = null;
    this.user = null;
    this._handlers = new Map();
    this._es = null;
    this._timer = null;
    this._delay = this.minRetry;
    this._gen = 0;
    this.transport = o.transport === "websocket" ? "websocket" : "sse";
    this._ws = null;
    this._pending = new Map();
    this._ref = 0;
    this._seen = new Set();
    if (o.start !== false) this.connect();
  }

  /** Adds a handler. Types: any event type ("message" for untyped events), and "open",
   *  "reset", "closed", "shutdown", "disconnected", "authfailure", "state". */
  on(type, fn) {
    if (!this._handlers.has(type)) {
      this._handlers.set(type, new Set());
      if (this._es && type !== "message" && !notStreamType(type)) {
        this._listen(this._es, type, this._gen);
      }
    }
    this._handlers.get(type).add(fn);
    return this;
  }

  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
    return this;
  }

  _emit(type, arg) {
    for (const fn of this._handlers.get(type) || []) {
      try {
        fn(arg);
      } catch (e) {
        console.error("runnel handler for", type, "failed:", e);
      }
    }
  }

  _setState(s) {
    if (this.state !== s) {
      this.state = s;
      this._emit("state", s);
    }
  }

  async _credential() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  _fetchInit(extra = {}) {
    return { credentials: this.withCredentials ? "include" : "same-origin", ...extra };
  }

  /** A request to the hub; throws RunnelError (status 0 when the hub cannot be reached). */
  async request(method, path, body) {
    const headers = {};
    const cred = await this._credential();
    if (cred) headers.authorization = `Bearer ${cred}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let r;
    try {
      r = await fetch(this.url + path, this._fetchInit({
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      }));
    } catch (e) {
      throw new RunnelError(`cannot reach the hub: ${e.message}`);
    }
    const text = await r.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!r.ok) {
      const err = json?.error || {};
      throw new RunnelError(err.message || `HTTP ${r.status}`, r.status, err.code || "http");
    }
    return json;
  }

  _streamUrl(extra) {
    const q = new URLSearchParams();
    for (const t of this.topics) q.append("topic", t);
    if (this.envelope) q.set("envelope", "1");
    for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
    const s = q.toString();
    return `${this.url}/events${s ? "?" + s : ""}`;
  }

  /** Opens the stream (called by the constructor unless `start: false`). */
  async connect() {
    clearTimeout(this._timer);
    const gen = ++this._gen;
    if (this.state !== "reconnecting") this._setState("connecting");
    let token = null;
    try {
      if (await this._credential()) {
        token = (await this.request("POST", "/auth/sse-token")).token;
      }
    } catch (e) {
      if (gen === this._gen) this._failed(e);
      return;
    }
    if (gen !== this._gen) return;
    if (this.transport === "websocket") {
      this._openSocket(gen, token);
      return;
    }
    const url = this._streamUrl({ token, last_event_id: this.lastEventId });
    const es = new EventSource(url, { withCredentials: this.withCredentials });
    this._es = es;
    es.addEventListener("connected", (m) => {
      if (gen !== this._gen) return;
      const info = JSON.parse(m.data);
      this.connectionId = info.connection_id;
      this.user = info.user;
      this._delay = this.minRetry;
      this._setState("open");
      this._emit("open", info);
    });
    es.addEventListener("reset", (m) => {
      if (gen === this._gen) this._emit("reset", JSON.parse(m.data));
    });
    es.addEventListener("shutdown", (m) => {
      if (gen === this._gen) this._emit("shutdown", JSON.parse(m.data));
    });
    es.addEventListener("closed", (m) => {
      if (gen !== this._gen) return;
      const info = JSON.parse(m.data);
      this._emit("closed", info);
      // Replaced by a newer stream of the same user, or closed by an admin: do not come back.
      if (info.reason === "replaced" || info.reason === "closed_by_admin") this.close();
    });
    // "message" always, so the resume point moves even without a handler for it.
    for (const type of new Set(["message", ...this._handlers.keys()])) {
      if (!notStreamType(type)) this._listen(es, type, gen);
    }
    es.onerror = () => {
      if (gen !== this._gen) return;
      es.close();
      this._es = null;
      this._dropped();
    };
  }

  _listen(es, type, gen) {
    es.addEventListener(type, (m) => {
      if (gen !== this._gen) return;
      if (m.lastEventId) this.lastEventId = m.lastEventId;
      this._emit(type, toEvent(type, m, this.envelope));
    });
  }

  /** GET /ws: the same stream as JSON messages, and answers to what this client sends. */
  _openSocket(gen, token) {
    const q = new URLSearchParams();
    for (const t of this.topics) q.append("topic", t);
    if (token) q.set("token", token);
    if (this.lastEventId) q.set("last_event_id", this.lastEventId);
    const base = new URL(this.url || location.origin, location.href);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    const s = q.toString();
    const ws = new WebSocket(`${base.origin}${base.pathname.replace(/\/+$/, "")}/ws${s ? "?" + s : ""}`);
    this._ws = ws;
    ws.onmessage = (m) => {
      if (gen !== this._gen) return;
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch {
        return;
      }
      this._onMessage(msg);
    };
    ws.onclose = () => {
      if (gen !== this._gen) return;
      this._ws = null;
      this._rejectPending(new RunnelError("the connection closed before the answer"));
      this._dropped();
    };
  }

  _onMessage(msg) {
    switch (msg.type) {
      case "connected":
        this.connectionId = msg.connection_id;
        this.user = msg.user;
        this._delay = this.minRetry;
        this._setState("open");
        this._emit("open", msg);
        return;
      case "event": {
        if (this._seen.has(msg.id)) return;
        this._seen.add(msg.id);
        if (this._seen.size > 1000) this._seen.delete(this._seen.values().next().value);
        this.lastEventId = msg.id;
        const type = msg.event || "message";
        const text = typeof msg.data === "string" ? msg.data : JSON.stringify(msg.data);
        this._emit(type, { id: msg.id, type, data: msg.data, text, topics: msg.topics });
        return;
      }
      case "reset":
      case "shutdown":
        this._emit(msg.type, msg);
        return;
      case "closed":
        this._emit("closed", msg);
        if (msg.reason === "replaced" || msg.reason === "closed_by_admin") this.close();
        return;
      case "ack":
      case "error":
      case "pong": {
        const p = this._pending.get(msg.ref);
        if (!p) return;
        this._pending.delete(msg.ref);
        clearTimeout(p.timer);
        if (msg.type === "error") {
          const st = { unauthorized: 401, forbidden: 403 }[msg.error.code] || 400;
          p.reject(new RunnelError(msg.error.message, st, msg.error.code));
        } else {
          p.resolve(msg.type === "ack" ? msg.result : msg);
        }
      }
    }
  }

  /** Sends one message over the socket and waits for its answer (10 s at most). */
  _call(message) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RunnelError("not connected"));
    }
    const ref = `r${++this._ref}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new RunnelError("no answer from the hub"));
      }, 10000);
      this._pending.set(ref, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...message, ref }));
    });
  }

  _rejectPending(err) {
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
  }

  /** The stream failed: probe before reconnecting. */
  async _dropped() {
    const gen = this._gen;
    this._setState("reconnecting");
    const err = await this._probe();
    if (gen === this._gen) this._failed(err);
  }

  /** Why the stream cannot open: a RunnelError with the hub's status and message. */
  async _probe() {
    let cred;
    const init = (method, signal) => this._fetchInit({
      method,
      signal,
      headers: cred ? { authorization: `Bearer ${cred}` } : {},
    });
    let r;
    try {
      cred = await this._credential();
      // HEAD /events runs the checks GET would (credentials, topics, permissions, limits)
      // without opening a stream, and answers with the status EventSource could not show.
      r = await fetch(this._streamUrl({}), init("HEAD"));
    } catch {
      return new RunnelError("network error");
    }
    if (r.ok) return new RunnelError(`HTTP ${r.status}`, r.status);
    // A HEAD answer has no body: ask again with GET for the hub's own reason (the JSON
    // error). Refused again, it opens nothing; should it open after all, it is aborted.
    const abort = new AbortController();
    let message = `HTTP ${r.status}`;
    let code = "http";
    let status = r.status;
    let retryAfter = Number(r.headers.get("retry-after")) || 0;
    try {
      const g = await fetch(this._streamUrl({}), init("GET", abort.signal));
      if (g.ok) {
        abort.abort();
        return new RunnelError(`HTTP ${g.status}`, g.status);
      }
      status = g.status;
      retryAfter = Number(g.headers.get("retry-after")) || retryAfter;
      const err = (await g.json()).error || {};
      message = err.message || message;
      code = err.code || code;
    } catch {
      /* keep what HEAD said */
    }
    const e = new RunnelError(message, status, code);
    e.retryAfter = retryAfter;
    return e;
  }

  _failed(err) {
    if (err.isAuth) {
      this._setState("auth-failed");
      this._emit("authfailure", err);
      return;
    }
    this._setState("reconnecting");
    this._emit("disconnected", err);
    // Backoff with jitter, and no sooner than the hub's Retry-After (429, 503).
    const wait = Math.max(this._delay * (0.75 + Math.random() / 2), (err.retryAfter || 0) * 1000);
    this._delay = Math.min(this._delay * 2, this.maxRetry);
    this._timer = setTimeout(() => this.connect(), wait);
  }

  /** Adds topics. A signed-in user's session gets them (every open stream, and later
   *  ones); an anonymous stream is named by its connection id. */
  async subscribe(topics) {
    if (this.transport === "websocket") return this._socketTopics(topics, true);
    return this._session("/subscribe", topics, true);
  }

  async unsubscribe(topics) {
    if (this.transport === "websocket") return this._socketTopics(topics, false);
    return this._session("/unsubscribe", topics, false);
  }

  /** Over a WebSocket: this connection's topics, named again on the next connect. */
  async _socketTopics(topics, add) {
    const r = await this._call({ op: add ? "subscribe" : "unsubscribe", topics });
    this.topics = add
      ? [...new Set([...this.topics, ...topics])]
      : this.topics.filter((t) => !topics.includes(t));
    return r;
  }

  async _session(path, topics, add) {
    const body = { topics };
    if (!this.user) body.connection_id = this.connectionId;
    const r = await this.request("POST", path, body);
    if (!this.user) {
      // Not kept by the hub across a reconnect: name them on the next stream.
      this.topics = add
        ? [...new Set([...this.topics, ...topics])]
        : this.topics.filter((t) => !topics.includes(t));
    }
    return r;
  }

  /** Publishes `message` ({topic|topics|user|broadcast, event, data, ...}, or an array of
   *  them as one atomic batch): POST /publish, or over the WebSocket. */
  async publish(message) {
    // Over the socket when it is open; otherwise (reconnecting) as a POST.
    if (this.transport === "websocket" && this._ws?.readyState === WebSocket.OPEN) {
      const body = Array.isArray(message) ? { events: message } : message;
      return this._call({ op: "publish", ...body });
    }
    return this.request("POST", "/publish", message);
  }

  /** Closes the stream for good. */
  close() {
    this._gen++;
    clearTimeout(this._timer);
    this._es?.close();
    this._es = null;
    this._ws?.close();
    this._ws = null;
    this._rejectPending(new RunnelError("closed"));
    this._setState("closed");
  }
}

function toEvent(type, m, envelope) {
  let text = m.data;
  let topics = null;
  if (envelope) {
    try {
      const e = JSON.parse(m.data);
      text = e.data;
      topics = e.topics;
    } catch {
      /* not an envelope: keep the raw data */
    }
  }
  let data = text;
  try {
    data = JSON.parse(text);
  } catch {
    /* plain text */
  }
  return { id: m.lastEventId || null, type, data, text, topics };
}
