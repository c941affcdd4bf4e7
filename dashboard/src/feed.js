// The one socket.io connection and everything it feeds. Events are buffered as they arrive
// and flushed into the log, the chart series and the store once per animation frame: never
// a store update per message. The same loop measures the page's own render rate.
import { io } from "socket.io-client";
import { Subscriptions } from "../../realtime/static/realtime-client.js";
import { RateMeter, RecentMedian, RingLog, Series } from "./buffers.js";
import { RANGE_CAPACITY, RANGES, RangeCharts } from "./ranges.js";
import { useStore } from "./store.js";

export const LOG_CAPACITY = 100_000;
const SNAPSHOT = 200;

export const log = new RingLog(LOG_CAPACITY);
export const series = new Map(); // topic -> Series
export const plots = new Map(); // topic -> its chart's uPlot (for the console and the tests)
const topicStats = new Map(); // topic -> {rate, latency}
let pending = [];
let gaps = 0;

const frames = new RateMeter();
const arrivals = new RateMeter();
let flushMsAvg = 0;

const rangeOf = (key) => RANGES.find((r) => r.key === key) ?? RANGES[0];

function seriesOf(topic) {
  let s = series.get(topic);
  if (s === undefined) {
    s = new Series();
    series.set(topic, s);
  }
  return s;
}

// Per topic: events/s over the last 5 s, and the end-to-end latency (the event's `ts`, set
// by its producer or the server, to this browser receiving it): the median over the last
// 10 s of each delivery's newest event. Measured on live deliveries only, not on the
// history a subscribe's ack carries (its age is not latency).
function measure(events) {
  const now = Date.now();
  const seen = new Map(); // topic -> {count, newest ts}
  for (const event of events) {
    if (typeof event?.topic !== "string") continue;
    const entry = seen.get(event.topic);
    if (entry === undefined) seen.set(event.topic, { count: 1, ts: event.ts });
    else {
      entry.count += 1;
      if (event.ts > entry.ts) entry.ts = event.ts;
    }
  }
  const at = performance.now();
  for (const [topic, { count, ts }] of seen) {
    let stats = topicStats.get(topic);
    if (stats === undefined) {
      stats = { rate: new RateMeter(5000), latency: new RecentMedian(10000) };
      topicStats.set(topic, stats);
    }
    stats.rate.add(at, count);
    if (Number.isFinite(ts)) stats.latency.add(at, now - ts);
  }
}

/** A topic's live numbers: {eventsPerSec, latencyMs (null: nothing lately)}. */
export function statsOf(topic) {
  const stats = topicStats.get(topic);
  const now = performance.now();
  if (stats === undefined) return { eventsPerSec: 0, latencyMs: null };
  return { eventsPerSec: stats.rate.rate(now), latencyMs: stats.latency.value(now) };
}

function receive(events) {
  for (const event of events) pending.push(event);
  arrivals.add(performance.now(), events.length);
}

function flush() {
  if (pending.length === 0) return;
  const started = performance.now();
  const batch = pending;
  pending = [];
  const topics = new Set();
  for (const event of batch) {
    log.push(event);
    const chart = event.chart ?? event.topic; // a range's tier is drawn on its topic's chart
    if (event.gap) seriesOf(chart).markBreak();
    else seriesOf(chart).add(event);
    topics.add(event.topic);
  }
  const state = useStore.getState();
  state.learnTopics([...topics]);
  flushMsAvg = 0.9 * flushMsAvg + 0.1 * (performance.now() - started);
  useStore.setState({
    frame: state.frame + 1,
    logLength: log.length,
    totalEvents: state.totalEvents + batch.length,
  });
}

let lastPerf = 0;
function onFrame(now) {
  frames.add(now);
  flush();
  if (now - lastPerf >= 250) {
    lastPerf = now;
    useStore.setState({
      perf: {
        fps: frames.rate(now),
        eventsPerSec: arrivals.rate(now),
        flushMs: flushMsAvg,
        pending: pending.length,
      },
    });
  }
  requestAnimationFrame(onFrame);
}

function setConnection(patch) {
  useStore.setState((s) => ({ connection: { ...s.connection, ...patch } }));
}

// A topic's viewers across all instances (this page included): the subscribe's ack, then
// `presence` events, at most one a second.
function setWatching(topic, count) {
  if (typeof topic === "string" && Number.isInteger(count))
    useStore.setState((s) => ({ watching: { ...s.watching, [topic]: count } }));
}

function forgetWatching(topic) {
  useStore.setState((s) => {
    const { [topic]: _, ...watching } = s.watching;
    return { watching };
  });
}

function setTopicError(topic, message) {
  useStore.setState((s) => ({ topicErrors: { ...s.topicErrors, [topic]: message } }));
}

// With client auth on, open the dashboard as /#token=<JWT>: a URL fragment never reaches
// a server or its logs. socket.io-client asks for it on every (re)connect.
function tokenAuth(cb) {
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  cb(token ? { token } : {});
}

export function startFeed(url = undefined) {
  // Websocket first (no sticky sessions needed behind a load balancer), long-polling when
  // a proxy refuses websockets.
  const socket = io(url, {
    transports: ["websocket", "polling"],
    tryAllTransports: true,
    reconnectionDelayMax: 5000,
    auth: tokenAuth,
  });
  const subs = new Subscriptions(socket, {
    // The newest events in the first ack, so charts start with recent history.
    subscribeOptions: { snapshot: SNAPSHOT, presence: true },
    onEvents: receive,
    onSubscribed: (topic, ack, { resumed }) => {
      setTopicError(topic, null);
      setWatching(topic, ack.presence?.count);
      if (resumed && ack.recovered !== false) {
        // One reconnect resumes every topic: a gap on one is not hidden by the others.
        useStore.setState((s) =>
          s.resume.state === "gap" && Date.now() - s.resume.at < 5000
            ? {}
            : { resume: { ...s.resume, state: "recovered", at: Date.now(), dismissed: false } },
        );
      }
    },
    onGap: (topic) => {
      // A marker row in the log where the missed events would have been.
      gaps += 1;
      pending.push({ topic, id: `gap-${gaps}`, ts: Date.now(), data: null, gap: true });
      useStore.setState((s) => ({
        resume: {
          state: "gap",
          at: Date.now(),
          dismissed: false,
          gaps: [...s.resume.gaps.slice(-9), { topic, at: Date.now() }],
        },
      }));
    },
    onError: (topic, error) => setTopicError(topic, error?.error?.message ?? String(error)),
  });

  socket.on("update", (events) => Array.isArray(events) && measure(events));
  socket.on("presence", (event) => setWatching(event?.topic, event?.count));
  socket.on("connect", () => {
    setConnection({
      status: "connected",
      attempt: 0,
      error: null,
      transport: socket.io.engine.transport.name,
      connects: useStore.getState().connection.connects + 1,
    });
    // Connection-state recovery: the session came back whole (no subscribe follows).
    if (socket.recovered) {
      useStore.setState((s) => ({
        resume: { ...s.resume, state: "recovered", at: Date.now(), dismissed: false },
      }));
    }
  });
  socket.io.on("open", () =>
    socket.io.engine.on("upgrade", (transport) => setConnection({ transport: transport.name })),
  );
  socket.io.on("reconnect_attempt", (attempt) => setConnection({ status: "reconnecting", attempt }));
  socket.on("disconnect", (reason) => {
    setConnection({ status: "reconnecting", transport: null, error: reason });
    // The server closed this session on purpose (e.g. a slow client): come back anyway,
    // and resume where we were.
    if (reason === "io server disconnect") socket.connect();
  });
  socket.on("connect_error", (error) =>
    setConnection({
      status: socket.active ? "reconnecting" : "refused",
      error: error.message,
    }),
  );

  // Follow the topic picker: subscribe what was added, unsubscribe what was removed; the
  // live topics themselves at "Now", their tiers over a range (ranges.js).
  const ranged = new RangeCharts(socket, {
    receive,
    onServed: (topic, served) =>
      useStore.setState((s) => ({ served: { ...s.served, [topic]: served } })),
    onGap: (topic) => seriesOf(topic).markBreak(),
    isLive: (topic) => subs.topics.has(topic),
  });
  const follow = (topics, range, previousRange) => {
    const live = range.ms ? [] : topics;
    if (range.key !== previousRange?.key) {
      // A new range draws from scratch: what the old one had buffered is not drawn.
      pending = pending.filter((event) => event.chart === undefined);
      for (const topic of new Set([...topics, ...series.keys()]))
        series.set(topic, new Series(range.ms ? RANGE_CAPACITY : undefined));
    }
    // Unsubscribes first: a range may be served by the live topic itself (its raw tier),
    // and an `unsubscribe` sent after the live `subscribe` of the same topic would end
    // the live subscription the server had just made.
    for (const topic of [...subs.topics.keys()])
      if (!live.includes(topic)) {
        subs.unsubscribe(topic);
        forgetWatching(topic); // over a range, the page no longer watches the live topic
      }
    ranged.set(range, topics);
    for (const topic of live) if (!subs.topics.has(topic)) subs.subscribe(topic);
  };
  follow(useStore.getState().topics, rangeOf(useStore.getState().range));
  useStore.subscribe((state, previous) => {
    if (state.topics !== previous.topics || state.range !== previous.range)
      follow(state.topics, rangeOf(state.range), rangeOf(previous.range));
  });

  requestAnimationFrame(onFrame);
  // rAF stops in a hidden tab; keep draining the buffer there so it cannot grow unbounded.
  setInterval(() => {
    if (document.hidden) flush();
  }, 1000);

  // For people debugging in the console, and for the browser tests.
  window.__realtime = {
    socket,
    subs,
    ranged,
    log,
    series,
    store: useStore,
    /** Feed synthetic events through the same buffer as socket events. */
    inject: (events) => receive(events),
    stats: () => ({
      fps: frames.rate(performance.now()),
      eventsPerSec: arrivals.rate(performance.now()),
      flushMs: flushMsAvg,
      logLength: log.length,
      totalEvents: useStore.getState().totalEvents,
      connection: useStore.getState().connection,
      resume: useStore.getState().resume,
    }),
    plots,
    statsOf,
  };
  return { socket, subs };
}
