// One topic's live chart: uPlot on a canvas, redrawn at most once per animation frame by a
// store subscription (no React render per update).
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import { series } from "../feed.js";
import { useStore } from "../store.js";

const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176"];
const HEIGHT = 180;

function options(width, fields) {
  return {
    width,
    height: HEIGHT,
    legend: { show: true, live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [
      { stroke: "#8a94a6", grid: { stroke: "#232a36" }, ticks: { stroke: "#232a36" } },
      { stroke: "#8a94a6", grid: { stroke: "#232a36" }, ticks: { stroke: "#232a36" }, size: 56 },
    ],
    series: [
      {},
      ...fields.map((field, i) => ({
        label: field,
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        points: { show: false },
        spanGaps: true,
      })),
    ],
  };
}

function formatValue(value) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 1000 || Number.isInteger(value)) return value.toLocaleString();
  return value.toFixed(2);
}

export function ChartCard({ topic }) {
  const card = useRef(null);
  const holder = useRef(null);
  const lastValue = useRef(null);
  const [fields, setFields] = useState(() => [...(series.get(topic)?.fields ?? [])]);
  const removeTopic = useStore((s) => s.removeTopic);
  const error = useStore((s) => s.topicErrors[topic]);

  useEffect(() => {
    if (fields.length === 0) {
      // No numeric data yet: wait for a frame that brings some.
      return useStore.subscribe(() => {
        const s = series.get(topic);
        if (s && s.fields.length) setFields([...s.fields]);
      });
    }
    const width = () => Math.max(240, holder.current.clientWidth);
    const plot = new uPlot(options(width(), fields), [[], ...fields.map(() => [])], holder.current);
    let drawn = -1;
    const draw = () => {
      const s = series.get(topic);
      if (!s || s.version === drawn) return;
      if (s.fields.length !== fields.length) {
        setFields([...s.fields]); // a new field: rebuild the chart with it
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
      card.current.dataset.points = String(s.length);
      card.current.dataset.last = String(value);
      lastValue.current.textContent = formatValue(value);
    };
    draw();
    const unsubscribe = useStore.subscribe((state, previous) => {
      if (state.frame !== previous.frame) draw();
    });
    const resize = new ResizeObserver(() => plot.setSize({ width: width(), height: HEIGHT }));
    resize.observe(holder.current);
    return () => {
      unsubscribe();
      resize.disconnect();
      plot.destroy();
    };
  }, [topic, fields]);

  return (
    <article className="card chart" ref={card} data-topic={topic} data-points="0" data-last="">
      <header>
        <h2 title={topic}>{topic}</h2>
        <span className="last" ref={lastValue}>
          –
        </span>
        <button className="icon" title={`Stop following ${topic}`} onClick={() => removeTopic(topic)}>
          ×
        </button>
      </header>
      {error && <p className="error">{error}</p>}
      {fields.length === 0 && !error && (
        <p className="waiting">Waiting for numeric data on {topic}… (other events show in the log)</p>
      )}
      <div className="plot" ref={holder} />
    </article>
  );
}
