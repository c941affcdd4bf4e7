// The server's topic directory (GET /api/v1/topics), as the topic browser reads it:
// one page at a time, with the same token the socket presents (from the URL fragment).

export const PAGE_SIZE = 100;

function bearer() {
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** One page: `{topics: [{topic, last_id, last_ts, rate, viewers}], next}`; throws with the server's message. */
export async function fetchDirectory(prefix, cursor, signal) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (prefix) query.set("prefix", prefix);
  if (cursor) query.set("cursor", cursor);
  const response = await fetch(`/api/v1/topics?${query}`, { headers: bearer(), signal });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body;
}
