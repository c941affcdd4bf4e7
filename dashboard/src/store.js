// The dashboard's state (Zustand). Large, fast-changing data (log rows, chart points) lives
// in the feed's buffers; the store holds what React renders from and one `frame` counter
// that the feed bumps once per animation frame in which events arrived.
import { create } from "zustand";
import { RANGES } from "./ranges.js";

export const TOPIC_RE = /^[a-z0-9][a-z0-9_.:-]{0,127}$/;
export const DEFAULT_TOPICS = ["metrics.cpu", "metrics.memory", "metrics.requests", "events.orders"];
const STORAGE_KEY = "realtime.topics";
const KNOWN_KEY = "realtime.known";
// How long a connection notice stays (it can be dismissed sooner): a gap is worth a
// longer look than a clean resume. The gap stays marked in the log and the charts.
export const NOTICE_MS = { gap: 30_000, recovered: 15_000 };

function initialTopics() {
  const fromUrl = new URLSearchParams(window.location.search).get("topics");
  if (fromUrl !== null) return fromUrl.split(",").filter((t) => TOPIC_RE.test(t));
  try {
    const saved = JSON.parse(window.localStorage.getItem(STORAGE_KEY) ?? "null");
    if (Array.isArray(saved)) return saved.filter((t) => TOPIC_RE.test(t));
  } catch {
    // unreadable storage: fall back to the defaults
  }
  return DEFAULT_TOPICS;
}

// The time-range control (ranges.js): "now", or a range to backfill; `?range=1h` opens on one.
function initialRange() {
  const asked = new URLSearchParams(window.location.search).get("range");
  return RANGES.some((r) => r.key === asked) ? asked : "now";
}

function initialKnown() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(KNOWN_KEY) ?? "null");
    if (Array.isArray(saved)) return [...new Set([...DEFAULT_TOPICS, ...saved.filter((t) => TOPIC_RE.test(t))])].sort();
  } catch {
    // unreadable storage: what this page sees is enough
  }
  return [...DEFAULT_TOPICS].sort();
}

function save(key, value) {
  try {
    window.localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // private mode or full storage: the selection just is not remembered
  }
}

const saveTopics = (topics) => save(STORAGE_KEY, topics);

export const useStore = create((set, get) => ({
  connection: {
    status: "connecting", // connecting | connected | reconnecting | refused
    attempt: 0,
    transport: null,
    error: null,
    connects: 0,
  },
  // What the last reconnect found: null (first connect), "recovered" or "gap"; its notice
  // shows until `dismissed` or NOTICE_MS[state] after `at`.
  resume: { state: null, at: null, gaps: [], dismissed: false },
  topics: initialTopics(),
  // Every topic this page has seen or followed (remembered): the topic browser lists them.
  known: initialKnown(),
  topicErrors: {},
  range: initialRange(),
  served: {}, // topic -> what a range is drawn from: {served, resolution, from, complete}
  watching: {}, // topic -> viewers across all instances (`presence`)
  frame: 0,
  logLength: 0,
  totalEvents: 0,
  perf: { fps: 0, eventsPerSec: 0, flushMs: 0, pending: 0 },

  addTopic(topic) {
    const { topics } = get();
    if (topics.includes(topic)) return;
    const next = [...topics, topic];
    saveTopics(next);
    set({ topics: next });
    get().learnTopics([topic]);
  },
  removeTopic(topic) {
    const next = get().topics.filter((t) => t !== topic);
    const { [topic]: _, ...topicErrors } = get().topicErrors;
    saveTopics(next);
    set({ topics: next, topicErrors });
  },
  learnTopics(seen) {
    const known = get().known;
    const fresh = seen.filter((t) => !known.includes(t));
    if (fresh.length) {
      const next = [...known, ...fresh].sort();
      save(KNOWN_KEY, next);
      set({ known: next });
    }
  },
  setRange(range) {
    set({ range, served: {} });
  },
  dismissNotice() {
    set((s) => ({ resume: { ...s.resume, dismissed: true } }));
  },
}));
