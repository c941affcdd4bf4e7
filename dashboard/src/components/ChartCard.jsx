// One topic's live chart: uPlot on a canvas, redrawn at most once per animation frame by a
// store subscription (no React render per update). Its legend is ours: one toggle button
// per field, so series can be shown and hidden from the keyboard as well as the mouse.
import { useEffect, useReducer, useRef, useState } from "react";
import uPlot from "uplot";
import { plots, series, statsOf } from "../feed.js";
import { useStore } from "../store.js";
import { axisLabel, axisNumber, duration } from "../time.js";

const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176"];
// Taller on a tall screen (a 4K monitor), never below 180 px.
const height = () => Math.round(Math.min(360, Math.max(180, window.innerHeight * 0.18)));
const AXIS = { stroke: "#8a94a6", grid: { stroke: "#232a36" }, ticks: { stroke: "#232a36" } };
const KIND_NOTE = { id: "looks like an id", counter: "looks like a running counter" };

// The user's choices (topic -> field -> shown), kept while the page lives, across the
// chart's rebuilds when a field appears.
const choices = new Map();

function shownFields(topic, layout) {
  const chosen = choices.get(topic) ?? {};
  const anyMeasure = layout.kinds.includes("measure");
  return layout.fields.map((field, i) =>
    field in chosen ? chosen[field] : layout.kinds[i] === "measure" || (!anyMeasure && i === 0),
  );
}

function layoutOf(s) {
  return { fields: [...(s?.fields ?? [])], kinds: [...(s?.kinds ?? [])], version: s?.fieldsVersion ?? 0 };
}

/** A y axis as wide as its widest label (never clipped), measured on uPlot's canvas. */
function fitToLabels(self, values, axisIdx, cycleNum) {
  const axis = self.axes[axisIdx];
  if (cycleNum > 1) return axis._size; // settled: stop uPlot from cycling
  let size = axis.ticks.size + axis.gap + 4;
  const widest = (values ?? []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  if (widest) {
    self.ctx.font = axis.font[0];
    size += self.ctx.measureText(widest).width / uPlot.pxRatio;
  }
  return Math.ceil(size);
}

function options(width, layout, shown) {
  return {
    width,
    height: height(),
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [
      { ...AXIS, space: 70, size: 32, values: (u, splits, i, space, incr) => splits.map((s) => axisLabel(s, incr)) },
      { ...AXIS, size: fitToLabels, values: (u, splits, i, space, incr) => splits.map((v) => axisNumber(v, incr)) },
    ],
    series: [
      {},
      ...layout.fields.map((field, i) => ({
        label: field,
        show: shown[i],
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        // Points only where they are sparse enough to tell apart (uPlot's default), so a
        // lone point between two breaks still shows.
        // null (a gap: nothing arrived, or events were missed) breaks the line; undefined
        // (this event lacks the field) is drawn across.
        spanGaps: false,
      })),
    ],
  };
}

function formatValue(value) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 1000 || Number.isInteger(value)) return value.toLocaleString("en");
  return value.toFixed(2);
}

function formatRate(perSec) {
  if (perSec >= 100) return Math.round(perSec).toLocaleString("en");
  return perSec.toFixed(1);
}

export function ChartCard({ topic }) {
  const card = useRef(null);
  const holder = useRef(null);
  const lastValue = useRef(null);
  const rate = useRef(null);
  const latency = useRef(null);
  const plotRef = useRef(null);
  const [layout, setLayout] = useState(() => layoutOf(series.get(topic)));
  const [, rerender] = useReducer((n) => n + 1, 0);
  const removeTopic = useStore((s) => s.removeTopic);
  const error = useStore((s) => s.topicErrors[topic]);
  const watching = useStore((s) => s.watching[topic]);
  const shown = shownFields(topic, layout);

  // The rate and latency, a few times a second (with the page's own numbers), and as soon
  // as the first events arrive.
  useEffect(() => {
    let updated = 0;
    const update = () => {
      updated = performance.now();
      const { eventsPerSec, latencyMs } = statsOf(topic);
      if (rate.current) rate.current.textContent = `${formatRate(eventsPerSec)}/s`;
      if (latency.current) latency.current.textContent = duration(latencyMs);
      if (card.current) {
        card.current.dataset.rate = String(eventsPerSec);
        card.current.dataset.latency = latencyMs === null ? "" : String(latencyMs);
      }
    };
    update();
    return useStore.subscribe((state, previous) => {
      const fresh = state.frame !== previous.frame && performance.now() - updated > 250;
      if (state.perf !== previous.perf || fresh) update();
    });
  }, [topic]);

  useEffect(() => {
    if (layout.fields.length === 0) {
      // No numeric data yet: wait for a frame that brings some.
      return useStore.subscribe(() => {
        const s = series.get(topic);
        if (s && s.fields.length) setLayout(layoutOf(s));
      });
    }
    const width = () => Math.max(160, holder.current.clientWidth);
    const plot = new uPlot(
      options(width(), layout, shownFields(topic, layout)),
      [[], ...layout.fields.map(() => [])],
      holder.current,
    );
    plotRef.current = plot;
    plots.set(topic, plot);
    let drawn = -1;
    const draw = () => {
      const s = series.get(topic);
      if (!s || s.version === drawn) return;
      if (s.fieldsVersion !== layout.version) {
        setLayout(layoutOf(s)); // a new field, or one found to be an id: rebuild
        return;
      }
      drawn = s.version;
      // The x window is ours to set: uPlot widens a single instant (one batch, one
      // timestamp) to years. Setting x re-ranges y over the visible points.
      plot.setData(s.data(), false);
      const lo = s.xs[0];
      const hi = s.xs[s.xs.length - 1];
      plot.setScale("x", lo === hi ? { min: lo - 30, max: hi + 30 } : { min: lo, max: hi });
      const value = s.last();
      card.current.dataset.points = String(s.length - s.breaks);
      card.current.dataset.breaks = String(s.breaks);
      card.current.dataset.last = String(value);
      lastValue.current.textContent = formatValue(value);
    };
    draw();
    const unsubscribe = useStore.subscribe((state, previous) => {
      if (state.frame !== previous.frame) draw();
    });
    const fit = () => plot.setSize({ width: width(), height: height() });
    const resize = new ResizeObserver(fit);
    resize.observe(holder.current);
    window.addEventListener("resize", fit); // a taller window: taller charts
    return () => {
      unsubscribe();
      resize.disconnect();
      window.removeEventListener("resize", fit);
      if (plots.get(topic) === plot) plots.delete(topic);
      plotRef.current = null;
      plot.destroy();
    };
  }, [topic, layout]);

  const toggle = (i) => {
    const field = layout.fields[i];
    const next = !shown[i];
    choices.set(topic, { ...(choices.get(topic) ?? {}), [field]: next });
    plotRef.current?.setSeries(i + 1, { show: next });
    rerender();
  };

  const headline = layout.fields[Math.max(0, layout.kinds.indexOf("measure"))];
  return (
    <article
      className="card chart"
      ref={card}
      data-topic={topic}
      data-points="0"
      data-last=""
      data-shown={layout.fields.filter((_, i) => shown[i]).join(",")}
      data-hidden={layout.fields.filter((_, i) => !shown[i]).join(",")}
      aria-label={`Chart of ${topic}`}
    >
      <header>
        <h2 title={topic}>{topic}</h2>
        <span className="last" ref={lastValue} title={headline ? `Newest ${headline}` : undefined}>
          –
        </span>
        <button
          type="button"
          className="icon"
          title={`Stop following ${topic}`}
          aria-label={`Stop following ${topic}`}
          onClick={() => removeTopic(topic)}
        >
          ×
        </button>
      </header>
      <dl className="meta">
        <div title="Events per second on this topic, over the last 5 s">
          <dt>rate</dt>
          <dd ref={rate} data-testid="rate">
            –
          </dd>
        </div>
        <div title="End to end: from the event's ts to this browser receiving it (median, last 10 s)">
          <dt>latency</dt>
          <dd ref={latency} data-testid="latency">
            –
          </dd>
        </div>
        <div className="watching" title="Viewers of this topic now, across all server instances, this page included">
          <dt>watching</dt>
          <dd data-testid="watching">{watching ?? "–"}</dd>
        </div>
      </dl>
      {error && <p className="error">{error}</p>}
      {layout.fields.length === 0 && !error && (
        <p className="waiting">Waiting for numeric data on {topic}… (other events show in the log)</p>
      )}
      <div className="plot" ref={holder} />
      {layout.fields.length > 0 && (
        <ul className="legend" aria-label={`Series of ${topic}`}>
          {layout.fields.map((field, i) => (
            <li key={field}>
              <button
                type="button"
                className={`series${shown[i] ? "" : " off"}`}
                aria-pressed={shown[i]}
                data-field={field}
                title={
                  (KIND_NOTE[layout.kinds[i]] ? `${field} ${KIND_NOTE[layout.kinds[i]]}: ` : "") +
                  (shown[i] ? "click to hide" : "click to show")
                }
                onClick={() => toggle(i)}
              >
                <span className="swatch" style={{ borderColor: COLORS[i % COLORS.length] }} aria-hidden="true" />
                {field}
                {KIND_NOTE[layout.kinds[i]] && <span className="kind"> ({layout.kinds[i]})</span>}
              </button>
            </li>
          ))}
        </ul>
      )}
    </article>
  );
}
