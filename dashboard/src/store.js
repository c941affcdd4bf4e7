// The dashboard's state (Zustand). Large, fast-changing data (log rows, chart points) lives
// in the feed's buffers; the store holds what React renders from and one `frame` counter
// that the feed bumps once per animation frame in which events arrived.
import { create } from "zustand";

export const TOPIC_RE = /^[a-z0-9][a-z0-9_.:-]{0,127}$/;
export const DEFAULT_TOPICS = ["metrics.cpu", "metrics.memory", "metrics.requests", "events.orders"];
const STORAGE_KEY = "realtime.topics";

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

function saveTopics(topics) {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(topics));
  } catch {
    // private mode or full storage: the selection just is not remembered
  }
}

export const useStore = create((set, get) => ({
  connection: {
    status: "connecting", // connecting | connected | reconnecting | refused
    attempt: 0,
    transport: null,
    error: null,
    connects: 0,
  },
  // What the last reconnect found: null (first connect), "recovered" or "gap".
  resume: { state: null, at: null, gaps: [] },
  topics: initialTopics(),
  known: [...DEFAULT_TOPICS],
  topicErrors: {},
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
    if (fresh.length) set({ known: [...known, ...fresh].sort() });
  },
}));
