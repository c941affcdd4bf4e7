// Unit tests of the pure JS parts (node's own test runner; tests/test_js_units.py runs it):
// the resume helper against a scripted socket, and the dashboard's buffers.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { RateMeter, RingLog, Series, numericFields } from "../../dashboard/src/buffers.js";
import { RangeCharts } from "../../dashboard/src/ranges.js";
import { Subscriptions, compareIds } from "../../realtime/static/realtime-client.js";

/** Enough of a socket.io-client Socket: records emits, answers with scripted acks. */
class FakeSocket extends EventEmitter {
  constructor(answer) {
    super();
    this.connected = false;
    this.sent = [];
    this.answer = answer;
  }
  timeout() {
    return this;
  }
  async emitWithAck(event, data) {
    this.sent.push([event, data]);
    return this.answer(event, data);
  }
  connect() {
    this.connected = true;
    this.emit("connect");
  }
  drop() {
    this.connected = false;
    this.emit("disconnect", "transport close");
  }
}

const ev = (topic, id, value = 0) => ({ topic, id, ts: 0, data: { value } });
const tick = () => new Promise((resolve) => setImmediate(resolve));

test("ids compare as (ms, seq) integer pairs, not strings", () => {
  assert.ok(compareIds("9-0", "10-0") < 0);
  assert.ok(compareIds("10-2", "10-10") < 0);
  assert.equal(compareIds("5-1", "5-1"), 0);
  assert.ok(compareIds("1700000000001-0", "1700000000000-99") > 0);
});

test("resubscribes with since after a reconnect and drops what it has seen", async () => {
  const socket = new FakeSocket((event, data) => ({ ok: true, topic: data.topic, recovered: true }));
  const got = [];
  const subscribed = [];
  const subs = new Subscriptions(socket, {
    onEvents: (events) => got.push(...events.map((e) => e.id)),
    onSubscribed: (topic, ack, { resumed }) => subscribed.push(resumed),
  });
  const first = subs.subscribe("a"); // not connected yet: sent on connect
  assert.equal(socket.sent.length, 0);
  socket.connect();
  assert.deepEqual(await first, { ok: true, topic: "a", recovered: true });
  assert.deepEqual(socket.sent, [["subscribe", { topic: "a" }]]);

  socket.emit("update", [ev("a", "1-0"), ev("a", "2-0"), ev("b", "1-0")]);
  socket.drop();
  socket.connect();
  await tick();
  assert.deepEqual(socket.sent[1], ["subscribe", { topic: "a", since: "2-0" }]);
  // The replay overlaps what was seen: only the new ones come through.
  socket.emit("update", [ev("a", "2-0"), ev("a", "3-0")]);
  socket.emit("update", [ev("a", "3-0"), ev("a", "10-0")]);
  assert.deepEqual(got, ["1-0", "2-0", "3-0", "10-0"]);
  assert.deepEqual(subscribed, [false, true]);
  assert.equal(subs.lastId("a"), "10-0");
});

test("recovered: false is reported as a gap, and a snapshot in the ack is delivered", async () => {
  const socket = new FakeSocket((event, data) =>
    data.since ? { ok: true, topic: "a", recovered: false, events: [ev("a", "50-0")] } : { ok: true, topic: "a" },
  );
  const gaps = [];
  const got = [];
  const subs = new Subscriptions(socket, {
    onGap: (topic) => gaps.push(topic),
    onEvents: (events) => got.push(...events.map((e) => e.id)),
  });
  socket.connect();
  await subs.subscribe("a");
  socket.emit("update", [ev("a", "1-0")]);
  socket.drop();
  socket.connect();
  await tick();
  assert.deepEqual(gaps, ["a"]);
  assert.deepEqual(got, ["1-0", "50-0"]);
});

test("a server without `since` gets a plain subscribe, and the caller a gap", async () => {
  const socket = new FakeSocket((event, data) =>
    "since" in data
      ? { ok: false, error: { code: "invalid", message: "x", fields: { since: ["Unknown field."] } } }
      : { ok: true, topic: data.topic },
  );
  const gaps = [];
  const errors = [];
  const subs = new Subscriptions(socket, { onGap: (t) => gaps.push(t), onError: (t) => errors.push(t) });
  socket.connect();
  await subs.subscribe("a");
  socket.emit("update", [ev("a", "1-0")]);
  socket.drop();
  socket.connect();
  await tick();
  await tick();
  assert.deepEqual(socket.sent.map(([, d]) => d), [{ topic: "a" }, { topic: "a", since: "1-0" }, { topic: "a" }]);
  assert.deepEqual(gaps, ["a"]);
  assert.deepEqual(errors, []);
  assert.ok(subs.topics.has("a"));
});

test("an optional field the server does not know is dropped, not fatal", async () => {
  const socket = new FakeSocket((event, data) =>
    "snapshot" in data
      ? { ok: false, error: { code: "invalid", message: "x", fields: { snapshot: ["Unknown field."] } } }
      : { ok: true, topic: data.topic },
  );
  const gaps = [];
  const subs = new Subscriptions(socket, { subscribeOptions: { snapshot: 5 }, onGap: (t) => gaps.push(t) });
  socket.connect();
  assert.deepEqual(await subs.subscribe("a"), { ok: true, topic: "a" });
  assert.deepEqual(socket.sent.map(([, d]) => d), [{ topic: "a", snapshot: 5 }, { topic: "a" }]);
  assert.deepEqual(gaps, []);
});

test("`unavailable` keeps the topic and asks again", { timeout: 5000 }, async () => {
  let answers = 0;
  const socket = new FakeSocket((event, data) =>
    ++answers === 1 ? { ok: false, error: { code: "unavailable", message: "history" } } : { ok: true, topic: data.topic },
  );
  let subscribed;
  const retried = new Promise((resolve) => (subscribed = resolve));
  const subs = new Subscriptions(socket, { onSubscribed: (topic) => subscribed(topic) });
  socket.connect();
  assert.equal((await subs.subscribe("a")).ok, false);
  assert.ok(subs.topics.has("a"));
  assert.equal(await retried, "a"); // the retry, 250-500 ms later
  assert.equal(socket.sent.length, 2);
});

test("a refused subscribe drops the topic and reports the error", async () => {
  const socket = new FakeSocket(() => ({ ok: false, error: { code: "forbidden", message: "no" } }));
  const errors = [];
  const subs = new Subscriptions(socket, { onError: (t, ack) => errors.push([t, ack.error.code]) });
  socket.connect();
  const ack = await subs.subscribe("secret");
  assert.equal(ack.ok, false);
  assert.deepEqual(errors, [["secret", "forbidden"]]);
  assert.ok(!subs.topics.has("secret"));
  socket.emit("update", [ev("secret", "1-0")]);
});

test("RingLog keeps the newest `capacity` entries in order", () => {
  const log = new RingLog(3);
  for (let i = 0; i < 5; i += 1) log.push(i);
  assert.equal(log.length, 3);
  assert.deepEqual(log.toArray(), [2, 3, 4]);
  assert.equal(log.fromNewest(0), 4);
  assert.equal(log.get(0), 2);
});

test("Series keeps numeric fields as uPlot columns, value first, x ascending", () => {
  assert.deepEqual(numericFields({ order: 7, value: 1, region: "eu", ok: true }), ["value", "order"]);
  // A window aggregate (issue 5): its summary, never its window times.
  const window = { window_start: 1e12, window_end: 1e12 + 1000, count: 4, sum: 10, min: 1, max: 4,
                   avg: 2.5, last: 4, p50: 2, p95: 4, p99: 4 };
  assert.deepEqual(numericFields(window), ["avg", "min", "max", "p95", "p99", "p50"]);
  assert.deepEqual(numericFields({ ts: 5, created_at: 6, latency_ms: 7 }), ["latency_ms"]);
  const s = new Series(2);
  s.add({ ts: 2000, data: { value: 1 } });
  s.add({ ts: 1000, data: { value: 2, p95: 9 } }); // late timestamp, new field
  // A field an event lacks is undefined (uPlot draws across it; null would break the line).
  assert.deepEqual(s.data(), [[2, 2], [1, 2], [undefined, 9]]);
  for (let i = 0; i < 5; i += 1) s.add({ ts: 3000 + i, data: { value: i } });
  assert.ok(s.length <= 4);
  assert.equal(s.last(), 4);
  assert.equal(s.add({ ts: 0, data: { text: "x" } }), true); // known fields stay, as nulls
});

test("RateMeter counts over the last second", () => {
  const meter = new RateMeter();
  meter.add(0, 5);
  meter.add(500, 5);
  assert.equal(meter.rate(900), 10);
  assert.equal(meter.rate(1200), 5);
  assert.equal(meter.rate(2000), 0);
});

test("a recovered session is not subscribed again; a new one is", async () => {
  const socket = new FakeSocket((event, data) => ({ ok: true, topic: data.topic }));
  socket.recovered = false; // socket.io-client 4.6+: connection-state recovery
  const got = [];
  const subs = new Subscriptions(socket, { onEvents: (events) => got.push(...events.map((e) => e.id)) });
  socket.connect();
  await subs.subscribe("a");
  socket.emit("update", [ev("a", "1-0")], "abc.1");
  socket.drop();
  socket.recovered = true;
  socket.connect();
  await tick();
  assert.equal(socket.sent.length, 1); // the session came back: nothing asked again
  socket.emit("update", [ev("a", "2-0")], "abc.2"); // what it missed, replayed
  socket.drop();
  socket.recovered = false;
  socket.connect();
  await tick();
  assert.deepEqual(socket.sent[1], ["subscribe", { topic: "a", since: "2-0" }]);
  assert.deepEqual(got, ["1-0", "2-0"]);
});

test("a range's late ack unsubscribes its topic, unless the page now follows it live", async () => {
  for (const live of [false, true]) {
    let answer;
    const socket = new FakeSocket(() => new Promise((resolve) => (answer = resolve)));
    const unsubscribed = [];
    socket.on("unsubscribe", (data) => unsubscribed.push(data.topic));
    const following = new Set();
    const ranged = new RangeCharts(socket, {
      receive: () => {},
      onServed: () => {},
      onGap: () => {},
      isLive: (topic) => following.has(topic),
    });
    socket.connect();
    ranged.set({ key: "5m", ms: 300_000 }, ["cpu"]);
    assert.equal(socket.sent.length, 1);
    // Back to "Now" before the range's ack: the live feed subscribes `cpu` itself, which
    // also serves the 5-minute range (its raw tier), so the ack names the same topic.
    ranged.set(null, ["cpu"]);
    if (live) following.add("cpu");
    answer({ ok: true, topic: "cpu", resolution: "raw" });
    await tick();
    assert.deepEqual(unsubscribed, live ? [] : ["cpu"]);
  }
});
