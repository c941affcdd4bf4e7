// One clock for the whole page: 24-hour local time, on the charts' axes, in the log and in
// the connection notices alike (never the locale's 12-hour "6:55pm").
const pad = (n, width = 2) => String(n).padStart(width, "0");

/** HH:MM:SS (and .mmm with `millis`) of an epoch time in milliseconds, local time. */
export function clock(ms, { millis = false } = {}) {
  const d = new Date(ms);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return millis ? `${time}.${pad(d.getMilliseconds(), 3)}` : time;
}

/**
 * A time axis' tick label for `seconds` (epoch), given the spacing between ticks (seconds):
 * dates for day ticks, HH:MM for minute ticks, HH:MM:SS below that, with tenths below a
 * second. Midnight on a sub-day axis shows the date instead, so a day change is visible.
 */
export function axisLabel(seconds, increment) {
  const d = new Date(seconds * 1000);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  if (increment >= 86400) return date;
  const midnight = d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0;
  if (midnight && d.getMilliseconds() === 0) return date.slice(5);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (increment >= 60) return hm;
  const hms = `${hm}:${pad(d.getSeconds())}`;
  if (increment >= 1) return hms;
  return `${hms}.${Math.floor(d.getMilliseconds() / 100)}`;
}

/** A duration in milliseconds, short: "12 ms", "1.4 s", "3 min". */
export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const sign = ms < 0 ? "−" : "";
  const abs = Math.abs(ms);
  if (abs < 1000) return `${sign}${Math.round(abs)} ms`;
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(abs < 10_000 ? 1 : 0)} s`;
  if (abs < 3_600_000) return `${sign}${Math.round(abs / 60_000)} min`;
  return `${sign}${(abs / 3_600_000).toFixed(1)} h`;
}

const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });

/** An axis value: compact past 10,000 (25k, 1.2M), as few decimals as the step needs. */
export function axisNumber(value, step = 0) {
  if (value === null || value === undefined) return "";
  if (Math.abs(value) >= 10_000) return compact.format(value);
  const decimals = step > 0 && step < 1 ? Math.min(6, Math.ceil(-Math.log10(step) - 1e-9)) : 0;
  return value.toFixed(decimals);
}
