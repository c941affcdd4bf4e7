// The live event log, newest first. Virtualized (TanStack Virtual): only the rows in view
// exist in the DOM, so 100,000 rows cost what 30 do. While the reader is scrolled down, new
// rows are added above without moving what they are reading.
import { useVirtualizer } from "@tanstack/react-virtual";
import { useLayoutEffect, useRef } from "react";
import { LOG_CAPACITY, log } from "../feed.js";
import { useStore } from "../store.js";

const ROW_HEIGHT = 24;

function time(ts) {
  const d = new Date(ts);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function Row({ event, style }) {
  return (
    <div className="row" style={style}>
      <span className="ts">{time(event.ts)}</span>
      <span className="topic">{event.topic}</span>
      <span className="id">{event.id}</span>
      <span className="data">{JSON.stringify(event.data)}</span>
    </div>
  );
}

export function EventLog() {
  const length = useStore((s) => s.logLength);
  const total = useStore((s) => s.totalEvents);
  const scroller = useRef(null);
  const seen = useRef({ total: 0 });

  const virtualizer = useVirtualizer({
    count: length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 12,
  });

  // Rows are indexed from the newest: keep a scrolled-down reader's rows in place.
  useLayoutEffect(() => {
    const added = total - seen.current.total;
    seen.current.total = total;
    const el = scroller.current;
    if (el && added > 0 && el.scrollTop > 0) el.scrollTop += added * ROW_HEIGHT;
  }, [total]);

  const following = (scroller.current?.scrollTop ?? 0) === 0;
  return (
    <section className="card log">
      <header>
        <h2>Event log</h2>
        <span className="count" data-testid="log-count">
          {length.toLocaleString()} rows{length === LOG_CAPACITY ? " (oldest dropped)" : ""}
        </span>
        {!following && (
          <button className="link" onClick={() => (scroller.current.scrollTop = 0)}>
            ↑ newest
          </button>
        )}
      </header>
      <div className="scroller" ref={scroller}>
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {virtualizer.getVirtualItems().map((item) => (
            <Row
              key={item.key}
              event={log.fromNewest(item.index)}
              style={{ position: "absolute", top: 0, height: ROW_HEIGHT, transform: `translateY(${item.start}px)` }}
            />
          ))}
        </div>
      </div>
    </section>
  );
}
