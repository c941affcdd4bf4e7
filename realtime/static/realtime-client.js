// realtime-client.js: topic subscriptions that survive reconnects, for socket.io-client 4.x.
//
// Plain ES module, no dependencies: pass it a socket from `io(...)`. It
//   - subscribes each topic on every (re)connect, with `since` = the last id it saw,
//     so the server replays what was missed (the README's "Resume after a reconnect");
//   - drops events it has already seen (ids at or below a topic's last id), so a
//     replay that overlaps live delivery never shows an event twice;
//   - tells you when the server could not replay everything (`recovered: false`: a gap);
//   - after a reconnect that recovered the session (socket.io-client 4.6+ does that by
//     itself: `socket.recovered`; older clients send the server's resume token, which
//     this helper keeps), subscribes nothing again: the server restored the
//     subscriptions and replays what was missed.
//
//   import { io } from "socket.io-client";
//   import { Subscriptions } from "/static/realtime-client.js";
//   const subs = new Subscriptions(io(), {
//     onEvents: (events) => { ... },                          // new events only, each once
//     onSubscribed: (topic, ack, { resumed }) => { ... },     // every subscribe ack
//   });
//   subs.subscribe("metrics.cpu");
//
// Served by every realtime web process at /static/realtime-client.js.

/** Parse an event id "<ms>-<seq>" into a pair of numbers. */
export function parseId(id) {
  const dash = id.indexOf("-");
  if (dash < 0) return [Number(id), 0];
  return [Number(id.slice(0, dash)), Number(id.slice(dash + 1))];
}

/** Compare two event ids as (ms, seq) integer pairs: <0, 0 or >0. Never compare as strings. */
export function compareIds(a, b) {
  const [am, as] = parseId(a);
  const [bm, bs] = parseId(b);
  return am !== bm ? am - bm : as - bs;
}

const NOOP = () => {};
// Subscribe fields a server may not know yet (it then refuses them as unknown).
const OPTIONAL_FIELDS = ["since", "snapshot", "presence"];

export class Subscriptions {
  /**
   * @param socket  a socket.io-client Socket (connected or not; its reconnection is used)
   * @param options
   *   onEvents(events)                     new events, each once, in id order per topic
   *   onSubscribed(topic, ack, {resumed})  after each successful subscribe; `resumed` is true
   *                                        when it asked for a replay (`since`): then
   *                                        `ack.recovered === false` means events were missed
   *   onGap(topic, ack)                    shorthand: called when a resume was not recovered
   *   onError(topic, errorOrAck)           a refused subscribe (the topic is dropped), a
   *                                        timeout (retried on the next connect) or
   *                                        `unavailable` (retried with backoff)
   *   subscribeOptions                     extra fields for every subscribe, e.g. {snapshot: 100}:
   *                                        the newest 100 events in the first ack (and in
   *                                        place of a replay that is not possible)
   *   ackTimeoutMs                         how long to wait for an ack (default 10000)
   */
  constructor(socket, options = {}) {
    this.socket = socket;
    this.onEvents = options.onEvents ?? NOOP;
    this.onSubscribed = options.onSubscribed ?? NOOP;
    this.onGap = options.onGap ?? NOOP;
    this.onError = options.onError ?? NOOP;
    this.subscribeOptions = options.subscribeOptions ?? {};
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10000;
    /** topic -> {lastId: string | null, options: object, acked: boolean} */
    this.topics = new Map();
    // socket.io-client 4.6+ recovers sessions natively; older ones get a resume token.
    this._native = "recovered" in socket;
    // Without either (a socket-like object), every connect subscribes again.
    this._tokens = !this._native && typeof socket.io?.on === "function";
    this._pid = null;
    this._resume = null;
    this._onConnect = () => {
      if (this._native) this._resubscribe(socket.recovered);
      else if (!this._tokens) this._resubscribe(false);
    };
    this._onUpdate = (events, offset) => {
      if (typeof offset === "string" && this._pid !== null) this._resume = `${this._pid}.${offset}`;
      this._receive(events);
    };
    this._onPacket = (packet) => {
      // The CONNECT answer of our namespace (the socket handled it just before).
      if (packet.type !== 0 || packet.nsp !== socket.nsp) return;
      const pid = typeof packet.data?.pid === "string" ? packet.data.pid : null;
      const recovered = pid !== null && pid === this._pid;
      this._pid = pid;
      this._resume = pid !== null && typeof packet.data.resume === "string" ? packet.data.resume : null;
      this._resubscribe(recovered);
    };
    socket.on("connect", this._onConnect);
    socket.on("update", this._onUpdate);
    if (this._tokens) {
      socket.io.on("packet", this._onPacket);
      const auth = socket.auth;
      // The app's auth (object or function), plus the resume token when there is one.
      socket.auth = (cb) => {
        const extra = this._resume !== null ? { resume: this._resume } : {};
        if (typeof auth === "function") auth((data) => cb({ ...data, ...extra }));
        else cb({ ...auth, ...extra });
      };
    }
  }

  /** After a connect: subscribe every topic, or only the unanswered ones if recovered. */
  _resubscribe(recovered) {
    for (const [topic, entry] of this.topics) {
      if (!(recovered && entry.acked)) this._send(topic);
    }
  }

  /** Subscribe now if connected, else on the next connect; resolves with that ack. */
  subscribe(topic, options = {}) {
    let entry = this.topics.get(topic);
    if (entry === undefined) {
      entry = { lastId: null, options, waiters: [], acked: false };
      this.topics.set(topic, entry);
    }
    if (this.socket.connected) return this._send(topic);
    return new Promise((resolve) => entry.waiters.push(resolve));
  }

  /** Stop following a topic; forgets its last id. */
  async unsubscribe(topic) {
    this.topics.delete(topic);
    if (!this.socket.connected) return { ok: true, topic };
    return this.socket.timeout(this.ackTimeoutMs).emitWithAck("unsubscribe", { topic });
  }

  /** The last event id seen on a topic, or null. */
  lastId(topic) {
    return this.topics.get(topic)?.lastId ?? null;
  }

  /** Detach from the socket (the socket itself stays as it is). */
  close() {
    this.socket.off("connect", this._onConnect);
    this.socket.off("update", this._onUpdate);
    if (this._tokens) this.socket.io.off("packet", this._onPacket);
    this.topics.clear();
  }

  async _send(topic, dropped = []) {
    const entry = this.topics.get(topic);
    const request = { topic, ...this.subscribeOptions, ...entry.options };
    if (entry.lastId !== null) request.since = entry.lastId;
    for (const key of dropped) delete request[key];
    const resumed = "since" in request;
    let ack;
    try {
      ack = await this.socket.timeout(this.ackTimeoutMs).emitWithAck("subscribe", request);
    } catch (error) {
      // No ack in time, or the connection dropped: the next connect retries.
      this.onError(topic, error);
      ack = { ok: false, topic, error: { code: "timeout", message: String(error) } };
      return this._settle(entry, ack);
    }
    if (!ack?.ok) {
      // A server older than an optional field (`since`, `snapshot`) refuses it as unknown:
      // subscribe without it; a resume that could not be asked for is a gap.
      const unknown = Object.keys(ack?.error?.fields ?? {}).filter(
        (key) => OPTIONAL_FIELDS.includes(key) && key in request,
      );
      if (ack?.error?.code === "invalid" && unknown.length) {
        const plain = await this._send(topic, [...dropped, ...unknown]);
        if (plain?.ok && unknown.includes("since")) this.onGap(topic, { ...plain, recovered: false });
        return plain;
      }
      this.onError(topic, ack);
      if (ack?.error?.code === "unavailable") {
        // History could not be read just now (Redis): keep the topic, ask again shortly.
        this._retryLater(topic, entry);
        return this._settle(entry, ack);
      }
      if (this.topics.get(topic) === entry) this.topics.delete(topic);
      return this._settle(entry, ack);
    }
    entry.retries = 0;
    entry.acked = true;
    // The gap comes before the snapshot the server sends in its place.
    if (resumed && ack.recovered === false) this.onGap(topic, ack);
    // A snapshot carried in the ack is delivered like any other event.
    if (Array.isArray(ack.events)) this._receive(ack.events);
    this.onSubscribed(topic, ack, { resumed });
    return this._settle(entry, ack);
  }

  _retryLater(topic, entry) {
    entry.retries = (entry.retries ?? 0) + 1;
    const delay = Math.min(10000, 250 * 2 ** entry.retries) * (0.5 + Math.random() / 2);
    setTimeout(() => {
      // Unless unsubscribed or disconnected meanwhile (a reconnect subscribes anyway).
      if (this.topics.get(topic) === entry && this.socket.connected) this._send(topic);
    }, delay);
  }

  _settle(entry, ack) {
    for (const resolve of entry.waiters.splice(0)) resolve(ack);
    return ack;
  }

  _receive(events) {
    const fresh = [];
    for (const event of events) {
      const entry = this.topics.get(event.topic);
      if (entry === undefined) continue; // unsubscribed meanwhile
      if (entry.lastId !== null && compareIds(event.id, entry.lastId) <= 0) continue;
      entry.lastId = event.id;
      fresh.push(event);
    }
    if (fresh.length) this.onEvents(fresh);
  }
}
