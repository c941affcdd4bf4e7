// Plain data structures behind the dashboard, outside React: the store only carries a
// version number per animation frame, so 100,000 log rows are never copied.

/** A fixed-capacity log: push is O(1); the oldest entries are dropped past capacity. */
export class RingLog {
  constructor(capacity) {
    this.capacity = capacity;
    this.items = new Array(capacity);
    this.start = 0;
    this.length = 0;
  }

  push(item) {
    const end = (this.start + this.length) % this.capacity;
    this.items[end] = item;
    if (this.length < this.capacity) this.length += 1;
    else this.start = (this.start + 1) % this.capacity;
  }

  /** Entry i, 0 = oldest. */
  get(i) {
    return this.items[(this.start + i) % this.capacity];
  }

  /** Entry i counted from the newest, 0 = newest. */
  fromNewest(i) {
    return this.get(this.length - 1 - i);
  }

  toArray() {
    return Array.from({ length: this.length }, (_, i) => this.get(i));
  }

  clear() {
    this.items = new Array(this.capacity);
    this.start = 0;
    this.length = 0;
  }
}

const MAX_FIELDS = 6;

// Charted first, in this order: a raw metric's value, then a window aggregate's summary
// (issue 5's `topic:window` outputs carry count/sum/min/max/avg/last/p50/p95/p99).
const PREFERRED = ["value", "avg", "min", "max", "p95", "p99", "p50", "last"];
// Times are not values: `window_start`, `window_end`, `ts`, `timestamp`, `created_at`, ...
const TIME_LIKE = /(^|_)(ts|time|timestamp|start|end|at)$/i;

/** The numeric fields of an event's data worth charting (at most MAX_FIELDS): preferred
 * names first, then the others in key order. The first one is the topic's headline. */
export function numericFields(data) {
  if (data === null || typeof data !== "object") return [];
  const numeric = Object.keys(data).filter(
    (key) => typeof data[key] === "number" && Number.isFinite(data[key]) && !TIME_LIKE.test(key),
  );
  const preferred = PREFERRED.filter((key) => numeric.includes(key));
  const others = numeric.filter((key) => !PREFERRED.includes(key));
  return [...preferred, ...others].slice(0, MAX_FIELDS);
}

// Not measurements: identifiers (an order number, a sequence) and running counters. They
// are kept, but hidden until the user shows them from the legend: a 5-digit id drawn on
// the same axis as a price squashes the price to a flat line.
const ID_NAME = /(^|[_.-])(id|ids|uuid|guid|key|seq|sequence|serial|order|index|idx|hash|code)$|[_.-](no|num|number)$/i;
const ID_CAMEL = /[a-z0-9](Id|ID|Uuid|Key|Seq|No|Number)$/;
const COUNTER_NAME = /_total$|(^|[_.-])(counter|cumulative|offset|uptime)$/i;
// Decided on the values too, from this many samples on (and again up to FIELD_SAMPLES).
const MIN_SAMPLES = 8;
const FIELD_SAMPLES = 64;

/** What a numeric field looks like from its name: "id", "counter", "measure" (a metric's
 * `value` or an aggregate's summary, always) or null (no idea). */
export function kindFromName(name) {
  if (PREFERRED.includes(name)) return "measure";
  if (ID_NAME.test(name) || ID_CAMEL.test(name)) return "id";
  if (COUNTER_NAME.test(name)) return "counter";
  return null;
}

/**
 * What a numeric field looks like: "id", "counter" or "measure", from its name and the
 * values seen so far. Values say "counter" when they are integers that only ever grow,
 * and "id" when they are integers of 4 digits or more that never repeat (random order
 * numbers); a gauge that happens to rise for a while is reclassified when it falls.
 */
export function fieldKind(name, values = []) {
  const named = kindFromName(name);
  if (named !== null) return named;
  if (values.length < MIN_SAMPLES || !values.every(Number.isInteger)) return "measure";
  let rising = true;
  for (let i = 1; i < values.length && rising; i += 1) rising = values[i] >= values[i - 1];
  if (rising && values[values.length - 1] > values[0]) return "counter";
  const large = values.every((v) => Math.abs(v) >= 1000);
  if (large && new Set(values).size === values.length) return "id";
  return "measure";
}

/** The q-quantile (0..1) of numbers, by sorting a copy. */
export function quantile(numbers, q) {
  if (numbers.length === 0) return NaN;
  const sorted = [...numbers].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// A gap is more than GAP_FACTOR times the usual spacing (the 90th percentile of the last
// INTERVALS spacings, so a bursty topic's long pauses count as usual), and at least
// MIN_GAP_S (a busy machine can stall a producer for a second); it is drawn as a break.
// With fewer than MIN_INTERVALS spacings, no guess is made. Factor 6 from a simulation of
// the demo's orders (30% of 200 ms ticks): no false break in 300 runs of 10 minutes,
// where factor 4 with 8 spacings broke 16% of them.
export const GAP_FACTOR = 6;
export const MIN_GAP_S = 2;
const INTERVALS = 64;
const MIN_INTERVALS = 16;

/** Where a line should break, given the recent spacings between points (seconds). */
export function gapThreshold(intervals) {
  if (intervals.length < MIN_INTERVALS) return Infinity;
  return Math.max(MIN_GAP_S, GAP_FACTOR * quantile(intervals, 0.9));
}

/**
 * One topic's chart data in uPlot's column layout: xs (seconds) and one column per numeric
 * field. Keeps the newest `capacity` points; trimming happens in halves so it is amortized.
 *
 * A field an event lacks is `undefined` (uPlot draws across it); a break is a row of
 * `null`s (uPlot, with spanGaps off, stops the line there): one is put in where no point
 * came for more than a few usual intervals, and after `markBreak()` (events missed).
 */
export class Series {
  constructor(capacity = 3000) {
    this.capacity = capacity;
    this.xs = [];
    this.fields = [];
    this.kinds = [];
    this.samples = [];
    this.columns = [];
    this.version = 0;
    this.fieldsVersion = 0;
    this.breaks = 0;
    this.intervals = [];
    this.threshold = Infinity;
    this.lastTs = null;
    this.breakNext = false;
  }

  /** The next point starts a new line (events were missed before it). */
  markBreak() {
    if (this.xs.length) this.breakNext = true;
  }

  _learn(field, value) {
    const i = this.fields.indexOf(field);
    const samples = this.samples[i];
    if (samples.length >= FIELD_SAMPLES) return;
    samples.push(value);
    if (samples.length >= MIN_SAMPLES && (samples.length & (samples.length - 1)) === 0) {
      const kind = fieldKind(field, samples); // re-decided at 8, 16, 32 and 64 samples
      if (kind !== this.kinds[i]) {
        this.kinds[i] = kind;
        this.fieldsVersion += 1;
      }
    }
  }

  _spacing(ts) {
    if (this.lastTs !== null && ts > this.lastTs) {
      const dt = (ts - this.lastTs) / 1000;
      const gap = dt > this.threshold;
      if (!gap) {
        this.intervals.push(dt);
        if (this.intervals.length > INTERVALS) this.intervals.shift();
        if (this.intervals.length % 8 === 0 || this.threshold === Infinity)
          this.threshold = gapThreshold(this.intervals);
      }
      this.lastTs = ts;
      return gap;
    }
    if (this.lastTs === null) this.lastTs = ts;
    return false;
  }

  add(event) {
    const data = event.data;
    for (const field of numericFields(data)) {
      if (!this.fields.includes(field) && this.fields.length < MAX_FIELDS) {
        this.fields.push(field);
        this.kinds.push(fieldKind(field));
        this.samples.push([]);
        this.columns.push(new Array(this.xs.length).fill(undefined));
        this.fieldsVersion += 1;
      }
    }
    if (this.fields.length === 0) return false;
    const gap = this._spacing(event.ts);
    // uPlot needs ascending x: a producer's late timestamp is drawn at the latest time.
    const x = event.ts / 1000;
    const lastX = this.xs.length ? this.xs[this.xs.length - 1] : -Infinity;
    if ((gap || this.breakNext) && this.xs.length) {
      this.xs.push(x > lastX ? (x + lastX) / 2 : lastX);
      for (const column of this.columns) column.push(null);
      this.breaks += 1;
    }
    this.breakNext = false;
    this.xs.push(x >= lastX ? x : lastX);
    this.fields.forEach((field, i) => {
      const value = data?.[field];
      const ok = typeof value === "number" && Number.isFinite(value);
      this.columns[i].push(ok ? value : undefined);
      if (ok) this._learn(field, value);
    });
    if (this.xs.length > 2 * this.capacity) {
      const drop = this.xs.length - this.capacity;
      this.xs.splice(0, drop);
      for (const column of this.columns) column.splice(0, drop);
    }
    this.version += 1;
    return true;
  }

  get length() {
    return this.xs.length;
  }

  /** The index of the headline field: the first measurement, else the first field. */
  headline() {
    const i = this.kinds.indexOf("measure");
    return i === -1 ? 0 : i;
  }

  /** The newest value of the headline field, or null. */
  last() {
    const column = this.columns[this.headline()];
    if (!column) return null;
    for (let i = column.length - 1; i >= 0; i -= 1) if (column[i] != null) return column[i];
    return null;
  }

  /** uPlot's data: [xs, column per field]. */
  data() {
    return [this.xs, ...this.columns];
  }
}

/** Counts of things per second over a sliding window (one second unless told). */
export class RateMeter {
  constructor(windowMs = 1000) {
    this.windowMs = windowMs;
    this.stamps = [];
    this.head = 0;
  }

  add(now, count = 1) {
    this.stamps.push([now, count]);
  }

  rate(now) {
    while (this.head < this.stamps.length && this.stamps[this.head][0] <= now - this.windowMs) this.head += 1;
    if (this.head > 1024) {
      this.stamps = this.stamps.slice(this.head);
      this.head = 0;
    }
    let total = 0;
    for (let i = this.head; i < this.stamps.length; i += 1) total += this.stamps[i][1];
    return (total * 1000) / this.windowMs;
  }
}

/** The median of the newest samples over a sliding window: [time, value] pairs. */
export class RecentMedian {
  constructor(windowMs = 10000, max = 256) {
    this.windowMs = windowMs;
    this.max = max;
    this.samples = [];
  }

  add(now, value) {
    this.samples.push([now, value]);
    if (this.samples.length > this.max) this.samples.shift();
  }

  value(now) {
    while (this.samples.length && this.samples[0][0] <= now - this.windowMs) this.samples.shift();
    if (this.samples.length === 0) return null;
    return quantile(this.samples.map(([, v]) => v), 0.5);
  }
}
