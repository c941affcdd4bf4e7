// The topic browser's logic: what to list and how a search narrows it.

/** Every topic worth listing, each once, sorted: the ones seen and the ones followed. */
export function allTopics(known, followed) {
  return [...new Set([...known, ...followed])].sort();
}

/** The topics that start with `prefix` (case-insensitive, spaces ignored). */
export function byPrefix(topics, prefix) {
  const p = prefix.trim().toLowerCase();
  return p ? topics.filter((t) => t.startsWith(p)) : topics;
}

/**
 * The browser's rows: the server's directory (`entries`, in name order, each with its
 * rate and viewers) and the topics this page knows of that start with `prefix`, each
 * once, sorted. While the directory has more pages (`complete` false), local topics
 * past the last entry wait for them, so a row never jumps back up the list.
 */
export function mergeListing(entries, local, prefix, complete) {
  const rows = new Map(entries.map((e) => [e.topic, { ...e, listed: true }]));
  const last = entries.length ? entries[entries.length - 1].topic : "";
  for (const topic of byPrefix(local, prefix)) {
    if (rows.has(topic) || (!complete && topic > last)) continue;
    rows.set(topic, { topic, rate: null, viewers: null, listed: false });
  }
  return [...rows.values()].sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0));
}

/**
 * A directory row's figures: "3.2/s · 4 watching"; a topic the directory did not list
 * had no recent event (once the directory has `answered`).
 */
export function rowFigures(row, answered = true) {
  if (!row.listed) return answered ? "no recent events" : "";
  const rate = row.rate >= 10 ? Math.round(row.rate) : Math.round(row.rate * 10) / 10;
  const parts = [`${rate}/s`];
  if (row.viewers != null) parts.push(`${row.viewers} watching`);
  return parts.join(" · ");
}
