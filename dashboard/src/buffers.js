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

/**
 * One topic's chart data in uPlot's column layout: xs (seconds) and one column per numeric
 * field. Keeps the newest `capacity` points; trimming happens in halves so it is amortized.
 */
export class Series {
  constructor(capacity = 3000) {
    this.capacity = capacity;
    this.xs = [];
    this.fields = [];
    this.columns = [];
    this.version = 0;
    this.fieldsVersion = 0;
  }

  add(event) {
    const data = event.data;
    for (const field of numericFields(data)) {
      if (!this.fields.includes(field) && this.fields.length < MAX_FIELDS) {
        this.fields.push(field);
        this.columns.push(new Array(this.xs.length).fill(null));
        this.fieldsVersion += 1;
      }
    }
    if (this.fields.length === 0) return false;
    // uPlot needs ascending x: a producer's late timestamp is drawn at the latest time.
    const x = event.ts / 1000;
    const lastX = this.xs.length ? this.xs[this.xs.length - 1] : -Infinity;
    this.xs.push(x >= lastX ? x : lastX);
    this.fields.forEach((field, i) => {
      const value = data?.[field];
      this.columns[i].push(typeof value === "number" && Number.isFinite(value) ? value : null);
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

  /** The newest value of the first field, or null. */
  last() {
    const column = this.columns[0];
    return column && column.length ? column[column.length - 1] : null;
  }

  /** uPlot's data: [xs, column per field]. */
  data() {
    return [this.xs, ...this.columns];
  }
}

/** Counts of things per second over a sliding one-second window. */
export class RateMeter {
  constructor() {
    this.stamps = [];
    this.head = 0;
  }

  add(now, count = 1) {
    this.stamps.push([now, count]);
  }

  rate(now) {
    while (this.head < this.stamps.length && this.stamps[this.head][0] <= now - 1000) this.head += 1;
    if (this.head > 1024) {
      this.stamps = this.stamps.slice(this.head);
      this.head = 0;
    }
    let total = 0;
    for (let i = this.head; i < this.stamps.length; i += 1) total += this.stamps[i][1];
    return total;
  }
}
