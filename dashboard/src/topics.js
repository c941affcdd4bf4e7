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
