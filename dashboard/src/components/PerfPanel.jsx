import { useStore } from "../store.js";

export function PerfPanel() {
  const { fps, eventsPerSec, flushMs } = useStore((s) => s.perf);
  const total = useStore((s) => s.totalEvents);
  return (
    <dl className="perf" data-testid="perf" title="This page's own rendering">
      <div>
        <dt>render</dt>
        <dd className={fps < 30 ? "warn" : ""}>{fps} fps</dd>
      </div>
      <div>
        <dt>events</dt>
        <dd>{eventsPerSec.toLocaleString()}/s</dd>
      </div>
      <div>
        <dt>flush</dt>
        <dd>{flushMs.toFixed(2)} ms</dd>
      </div>
      <div>
        <dt>total</dt>
        <dd>{total.toLocaleString()}</dd>
      </div>
    </dl>
  );
}
