// Unit tests of the dashboard's pure logic (node's own test runner; tests/test_js_units.py
// runs it): which fields are charted, where a line breaks, the one clock, the topic search.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  RateMeter,
  RecentMedian,
  Series,
  fieldKind,
  gapThreshold,
  kindFromName,
  quantile,
} from "../../dashboard/src/buffers.js";
import { axisLabel, axisNumber, clock, duration } from "../../dashboard/src/time.js";
import { allTopics, byPrefix, mergeListing, rowFigures } from "../../dashboard/src/topics.js";

/** A deterministic pseudo-random sequence (mulberry32), so the tests never flake. */
function random(seed) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("names: ids and counters are recognised, measurements are not", () => {
  for (const name of ["id", "order", "order_id", "orderId", "user.id", "uuid", "seq", "event_seq", "invoice_no", "ticket_number", "index"])
    assert.equal(kindFromName(name), "id", name);
  for (const name of ["requests_total", "counter", "bytes_cumulative", "uptime"]) assert.equal(kindFromName(name), "counter", name);
  for (const name of ["value", "avg", "p95"]) assert.equal(kindFromName(name), "measure", name);
  assert.equal(fieldKind("value", [1, 2, 3, 4, 5, 6, 7, 8, 9]), "measure"); // by name, always
  for (const name of ["price", "total", "count", "latency_ms", "paid", "valid", "monkey", "items", "number"])
    assert.equal(kindFromName(name), null, name);
});

test("values: random large distinct integers are ids, growing integers counters, the rest measurements", () => {
  const rnd = random(1);
  const ids = Array.from({ length: 16 }, () => 10_000 + Math.floor(rnd() * 89_999));
  assert.equal(fieldKind("ref", ids), "id");
  assert.equal(fieldKind("ref", ids.slice(0, 4)), "measure"); // too few to say
  assert.equal(fieldKind("sent", [1, 2, 2, 5, 9, 12, 20, 21]), "counter");
  // A gauge that rose for a while is a measurement again once it falls.
  assert.equal(fieldKind("queue", [1, 2, 3, 4, 5, 6, 7, 8]), "counter");
  assert.equal(fieldKind("queue", [1, 2, 3, 4, 5, 6, 7, 8, 7, 5, 6, 4, 3, 2, 3, 1]), "measure");
  assert.equal(fieldKind("price", [12.5, 30.25, 7.5, 99.99, 5, 8.75, 410.1, 33]), "measure");
  assert.equal(fieldKind("items", [1, 3, 2, 4, 1, 1, 2, 3]), "measure"); // small integers repeat
  assert.equal(fieldKind("flat", [5, 5, 5, 5, 5, 5, 5, 5]), "measure");
});

test("the demo's events.orders: the order id is kept but not the headline, value is", () => {
  const rnd = random(2);
  const s = new Series();
  for (let n = 0; n < 40; n += 1)
    s.add({ ts: 1000 * n, data: { order: 10_000 + Math.floor(rnd() * 89_999), region: "eu", value: 5 + n } });
  assert.deepEqual(s.fields, ["value", "order"]);
  assert.deepEqual(s.kinds, ["measure", "id"]);
  assert.equal(s.last(), 44);
  // Found by its values alone, after enough samples (the name says nothing).
  const t = new Series();
  for (let n = 0; n < 16; n += 1)
    t.add({ ts: 1000 * n, data: { value: n % 3, ref: 10_000 + Math.floor(rnd() * 89_999) } });
  assert.deepEqual(t.kinds, ["measure", "id"]);
  assert.equal(t.headline(), 0);
  // Nothing but an id: it is still the headline (there is nothing else to show).
  const u = new Series();
  u.add({ ts: 0, data: { order_id: 12345 } });
  assert.equal(u.headline(), 0);
  assert.equal(u.last(), 12345);
});

test("the gap threshold: six of the usual (90th percentile) intervals, at least 2 s", () => {
  assert.equal(gapThreshold(Array(15).fill(0.5)), Infinity); // too little to say
  assert.equal(gapThreshold(Array(20).fill(1)), 6);
  assert.equal(gapThreshold(Array(20).fill(0.05)), 2);
  assert.equal(quantile([5, 1, 4, 2, 3], 0.5), 3);
});

test("a line breaks (a null row) where nothing arrived for a while, and nowhere else", () => {
  const s = new Series();
  for (let n = 0; n < 20; n += 1) s.add({ ts: 100_000 + 500 * n, data: { value: n } });
  // A web restart: nothing for 30 s.
  for (let n = 0; n < 5; n += 1) s.add({ ts: 140_000 + 500 * n, data: { value: n } });
  const [xs, values] = s.data();
  assert.equal(s.breaks, 1);
  const gap = values.indexOf(null);
  assert.equal(gap, 20);
  assert.ok(xs[gap] > 109.5 && xs[gap] < 140, `the break is inside the outage: ${xs[gap]}`);
  assert.deepEqual(values.filter((v) => v === null).length, 1);
  assert.equal(s.length - s.breaks, 25);
});

test("a bursty topic (the demo's orders: 30% of 200 ms ticks) does not break at its usual pauses", () => {
  // 50 runs of 10 minutes each, from the first point on (the estimate is weakest early).
  let breaks = 0;
  let s;
  let ts;
  for (let seed = 1; seed <= 50; seed += 1) {
    const rnd = random(seed);
    s = new Series();
    ts = 0;
    for (let tick = 0; tick < 3000; tick += 1) {
      ts += 200 + rnd() * 20;
      if (rnd() < 0.3) s.add({ ts, data: { value: rnd() * 500 } });
    }
    breaks += s.breaks;
  }
  assert.equal(breaks, 0);
  s.add({ ts: ts + 60_000, data: { value: 1 } });
  assert.equal(s.breaks, 1);
});

test("markBreak (events were missed) breaks the line at the next point", () => {
  const s = new Series();
  s.markBreak(); // nothing drawn yet: nothing to break
  s.add({ ts: 1000, data: { value: 1 } });
  s.add({ ts: 2000, data: { value: 2 } });
  s.markBreak();
  s.add({ ts: 2500, data: { value: 3 } });
  assert.deepEqual(s.data(), [[1, 2, 2.25, 2.5], [1, 2, null, 3]]);
  assert.equal(s.breaks, 1);
});

test("one clock: 24-hour everywhere, the axis as precise as its ticks", () => {
  const evening = new Date(2026, 11, 4, 18, 55, 3, 42).getTime();
  assert.equal(clock(evening), "18:55:03");
  assert.equal(clock(evening, { millis: true }), "18:55:03.042");
  assert.equal(axisLabel(evening / 1000, 15), "18:55:03");
  assert.equal(axisLabel(evening / 1000, 300), "18:55");
  assert.equal(axisLabel(evening / 1000, 0.5), "18:55:03.0");
  assert.equal(axisLabel(evening / 1000, 86400), "2026-12-04");
  assert.equal(axisLabel(new Date(2026, 11, 5).getTime() / 1000, 3600), "12-05");
  for (const label of [clock(evening), axisLabel(evening / 1000, 60)]) assert.doesNotMatch(label, /am|pm/i);
});

test("axis numbers stay short, durations read as durations", () => {
  assert.equal(axisNumber(100_000), "100K");
  assert.equal(axisNumber(1_250_000), "1.3M");
  assert.equal(axisNumber(2500, 500), "2500");
  assert.equal(axisNumber(0.25, 0.05), "0.25");
  assert.equal(axisNumber(40, 20), "40");
  assert.equal(duration(12.4), "12 ms");
  assert.equal(duration(1400), "1.4 s");
  assert.equal(duration(-30), "−30 ms");
  assert.equal(duration(null), "–");
});

test("the topic browser lists each topic once, sorted, and searches by prefix", () => {
  const all = allTopics(["metrics.cpu", "events.orders", "metrics.memory"], ["metrics.cpu", "ui.x"]);
  assert.deepEqual(all, ["events.orders", "metrics.cpu", "metrics.memory", "ui.x"]);
  assert.deepEqual(byPrefix(all, "metrics."), ["metrics.cpu", "metrics.memory"]);
  assert.deepEqual(byPrefix(all, " Metrics.M "), ["metrics.memory"]);
  assert.deepEqual(byPrefix(all, ""), all);
  assert.deepEqual(byPrefix(all, "cpu"), []); // a prefix, not a substring
});

test("rate over a longer window, latency as a recent median", () => {
  const meter = new RateMeter(5000);
  meter.add(0, 10);
  meter.add(1000, 15);
  assert.equal(meter.rate(4000), 5);
  assert.equal(meter.rate(5500), 3);
  const median = new RecentMedian(10_000);
  median.add(0, 5000); // an outlier (a replay's newest event)
  median.add(100, 20);
  median.add(200, 30);
  assert.equal(median.value(300), 30);
  assert.equal(median.value(10_050), 30);
  assert.equal(median.value(20_000), null);
});

test("the topic browser merges the directory with the topics the page knows, in order", () => {
  const entries = [
    { topic: "metrics.cpu", rate: 2.345, viewers: null },
    { topic: "metrics.mem", rate: 12.6, viewers: 3 },
  ];
  const local = ["metrics.cpu", "metrics.a", "metrics.zz", "orders.x"];
  const rows = mergeListing(entries, local, "metrics.", false);
  // More pages to come: a local topic after the last entry waits for them.
  assert.deepEqual(rows.map((r) => [r.topic, r.listed]), [
    ["metrics.a", false],
    ["metrics.cpu", true],
    ["metrics.mem", true],
  ]);
  assert.deepEqual(
    mergeListing(entries, local, "metrics.", true).map((r) => r.topic),
    ["metrics.a", "metrics.cpu", "metrics.mem", "metrics.zz"],
  );
  assert.equal(rowFigures(rows[1]), "2.3/s");
  assert.equal(rowFigures(rows[2]), "13/s · 3 watching");
  assert.equal(rowFigures(rows[0]), "no recent events");
  assert.equal(rowFigures(rows[0], false), ""); // the directory has not answered yet
});
