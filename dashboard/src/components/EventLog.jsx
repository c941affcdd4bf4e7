// The live event log, newest first. Virtualized (TanStack Virtual): only the rows in view
// exist in the DOM, so 100,000 rows cost what 30 do. While the reader is scrolled down, new
// rows are added above without moving what they are reading.
import { useVirtualizer } from "@tanstack/react-virtual";
import { memo, useLayoutEffect, useRef } from "react";
import { LOG_CAPACITY, log } from "../feed.js";
import { useStore } from "../store.js";
import { clock } from "../time.js";

const ROW_HEIGHT = 24;

// Formatting is the costly part of a row; each event is formatted once, when first shown.
const formatted = new WeakMap();
function format(event) {
  let text = formatted.get(event);
  if (text === undefined) {
    text = {
      time: clock(event.ts),
      ms: `.${String(new Date(event.ts).getMilliseconds()).padStart(3, "0")}`,
      data: JSON.stringify(event.data),
    };
    formatted.set(event, text);
  }
  return text;
}

const Row = memo(function Row({ event, start }) {
  const text = format(event);
  if (event.gap) {
    return (
      <div className="row gap" style={{ transform: `translateY(${start}px)` }}>
        <span className="ts">
          {text.time}
          <span className="ms">{text.ms}</span>
        </span>
        <span className="topic">{event.topic}</span>
        <span className="data">⚠ events missed here: the server's history no longer held them</span>
      </div>
    );
  }
  return (
    <div className="row" style={{ transform: `translateY(${start}px)` }}>
      <span className="ts">
          {text.time}
          <span className="ms">{text.ms}</span>
        </span>
      <span className="topic">{event.topic}</span>
      <span className="id">{event.id}</span>
      <span className="data">{text.data}</span>
    </div>
  );
});

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
          <button type="button" className="link" onClick={() => (scroller.current.scrollTop = 0)}>
            ↑ newest
          </button>
        )}
      </header>
      {/* Focusable, so the arrow keys and Page Up/Down scroll it. */}
      <div className="scroller" ref={scroller} tabIndex={0} role="region" aria-label="Event log, newest first">
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {virtualizer.getVirtualItems().map((item) => {
            const event = log.fromNewest(item.index);
            // Keyed by the event, not the index: a row that only moves keeps its DOM.
            return <Row key={`${event.topic}/${event.id}`} event={event} start={item.start} />;
          })}
        </div>
      </div>
    </section>
  );
}
