// The time-range control's subscriptions. "Now" is the plain live feed (feed.js, through
// the JS helper: snapshot, then live). A range (5 min, 1 h, 24 h, 7 d) subscribes each
// chart's topic with `{from: now - range, resolution: "auto", points}`: the server picks
// the topic's tier that draws the range in about `points` points (metrics.cpu:1m for a
// week), replays it from that time in pages, then goes on live on it (docs/protocol.md).
// Switching range changes subscriptions on the same connection, never reconnects. After a
// reconnect a chart resumes its tier with `since` (a missed stretch: a break in the line).
import { compareIds } from "../../realtime/static/realtime-client.js";

export const RANGES = [
  { key: "now", label: "Now", ms: null },
  { key: "5m", label: "5 min", ms: 5 * 60_000 },
  { key: "1h", label: "1 h", ms: 3_600_000 },
  { key: "24h", label: "24 h", ms: 86_400_000 },
  { key: "7d", label: "7 d", ms: 7 * 86_400_000 },
];
export const POINTS = 600;
// A chart of a range keeps every point of it: a week of 1-minute windows is 10,080.
export const RANGE_CAPACITY = 12_000;

export class RangeCharts {
  /**
   * @param socket   the page's socket.io socket
   * @param receive  (events) => void: the feed's buffer; each event carries `chart`, the
   *                 topic whose chart draws it
   * @param onServed (topic, {served, resolution, from, complete} | null) => void
   * @param onGap    (topic) => void: a resume missed events (the chart breaks there)
   * @param isLive   (topic) => boolean: the page follows `topic` live (feed.js), so a
   *                 range's late ack must not unsubscribe it
   */
  constructor(socket, { receive, onServed, onGap, isLive = () => false, ackTimeoutMs = 10_000 }) {
    this.socket = socket;
    this.receive = receive;
    this.onServed = onServed;
    this.onGap = onGap;
    this.isLive = isLive;
    this.ackTimeoutMs = ackTimeoutMs;
    this.range = null;
    this.charts = new Map(); // topic -> {served: string | null, lastId, generation}
    this.byServed = new Map(); // served topic -> chart topic
    this.generation = 0;
    // Events of a topic not (yet) known to be served, while a subscribe awaits its ack: on
    // long-polling its replay can arrive in the same payload as the ack, before it is read.
    this.held = [];
    this.asking = 0;
    socket.on("update", (events) => Array.isArray(events) && this._update(events));
    socket.on("connect", () => {
      for (const topic of this.charts.keys()) this._subscribe(topic, true);
    });
  }

  /** Follow `topics` over `range` (a RANGES entry with `ms`), or nothing (range null). */
  set(range, topics) {
    const changed = range?.key !== this.range?.key;
    this.range = range?.ms ? range : null;
    for (const topic of [...this.charts.keys()])
      if (changed || this.range === null || !topics.includes(topic)) this._drop(topic);
    if (this.range === null) return;
    for (const topic of topics) if (!this.charts.has(topic)) this._subscribe(topic, false);
  }

  _drop(topic) {
    const chart = this.charts.get(topic);
    this.charts.delete(topic);
    this.onServed(topic, null);
    if (chart?.served) {
      this.byServed.delete(chart.served);
      if (this.socket.connected) this.socket.emit("unsubscribe", { topic: chart.served });
    }
  }

  async _subscribe(topic, reconnect) {
    let chart = this.charts.get(topic);
    if (chart === undefined) {
      chart = { served: null, lastId: null, generation: ++this.generation };
      this.charts.set(topic, chart);
    }
    if (!this.socket.connected) return; // the next connect subscribes
    const { generation } = chart;
    // Resume the tier where the chart is; a first subscribe (or one that never got an
    // event) asks for the range again.
    const request =
      reconnect && chart.served && chart.lastId
        ? { topic: chart.served, since: chart.lastId }
        : { topic, from: Date.now() - this.range.ms, resolution: "auto", points: POINTS };
    let ack;
    this.asking += 1;
    try {
      ack = await this.socket.timeout(this.ackTimeoutMs).emitWithAck("subscribe", request);
    } catch {
      return; // no answer: the next connect asks again
    } finally {
      this.asking -= 1;
    }
    if (this.charts.get(topic)?.generation !== generation) {
      // The range changed meanwhile: this subscription is no one's, unless another chart
      // or the live feed (back at "Now": a range can be served by the topic's raw tier)
      // subscribed the same topic since; the server keeps one subscription per topic.
      if (ack?.ok && !this.byServed.has(ack.topic) && !this.isLive(ack.topic))
        this.socket.emit("unsubscribe", { topic: ack.topic });
      return;
    }
    if (!ack?.ok) return;
    if (request.since && ack.recovered === false) this.onGap(topic);
    chart.served = ack.topic;
    this.byServed.set(ack.topic, topic);
    const held = this.held.filter((e) => e.topic === ack.topic);
    this.held = this.asking ? this.held.filter((e) => e.topic !== ack.topic) : [];
    if (held.length) this._update(held);
    if (!request.since)
      this.onServed(topic, {
        served: ack.topic,
        resolution: ack.resolution,
        from: ack.from,
        complete: ack.complete,
      });
  }

  _update(events) {
    const fresh = [];
    for (const event of events) {
      const topic = this.byServed.get(event.topic);
      if (topic === undefined) {
        if (this.asking && this.held.length < RANGE_CAPACITY * 4) this.held.push(event);
        continue;
      }
      const chart = this.charts.get(topic);
      if (chart.lastId !== null && compareIds(event.id, chart.lastId) <= 0) continue;
      chart.lastId = event.id;
      fresh.push({ ...event, chart: topic });
    }
    if (fresh.length) this.receive(fresh);
  }
}
