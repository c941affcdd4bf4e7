// The time-range control: "Now" (live, the newest events) or a range each chart backfills
// at the resolution the server picks for it, then keeps moving live (ranges.js).
import { RANGES } from "../ranges.js";
import { useStore } from "../store.js";

export function RangeControl() {
  const range = useStore((s) => s.range);
  const served = useStore((s) => s.served);
  const setRange = useStore((s) => s.setRange);
  const tiers = [...new Set(Object.values(served).filter(Boolean).map((s) => s.resolution))];
  const incomplete = Object.values(served).some((s) => s && s.complete === false);
  return (
    <div className="ranges" role="group" aria-label="Time range" data-testid="range">
      {RANGES.map((r) => (
        <button
          key={r.key}
          type="button"
          aria-pressed={range === r.key}
          data-testid={`range-${r.key}`}
          onClick={() => setRange(r.key)}
        >
          {r.label}
        </button>
      ))}
      {tiers.length > 0 && (
        <span className="range-note" data-testid="range-served">
          {tiers.join(", ")} windows{incomplete ? " · history starts later" : ""}
        </span>
      )}
    </div>
  );
}
