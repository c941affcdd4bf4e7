import { useEffect, useId, useState } from "react";
import { fetchDirectory } from "../directory.js";
import { TOPIC_RE, useStore } from "../store.js";
import { allTopics, mergeListing, rowFigures } from "../topics.js";

const PREFIX_RE = /^(?:[a-z0-9][a-z0-9_.:-]{0,127})?$/;
const REFRESH_MS = 10_000; // rates move: the first page is read again this often

/**
 * The server's topic directory (topics with recent events, with their rate and viewers)
 * and the topics this page knows of, narrowed by a prefix search; a checkbox follows one.
 */
function TopicBrowser({ id }) {
  const topics = useStore((s) => s.topics);
  const known = useStore((s) => s.known);
  const addTopic = useStore((s) => s.addTopic);
  const removeTopic = useStore((s) => s.removeTopic);
  const [prefix, setPrefix] = useState("");
  const wanted = prefix.trim().toLowerCase();
  const searchable = PREFIX_RE.test(wanted);
  // The directory's pages for `of` (the prefix they answer); `error` when it cannot be read.
  const [dir, setDir] = useState({ of: null, pages: 0, entries: [], next: null, error: null });
  const [more, setMore] = useState(null); // the cursor of the page being fetched

  useEffect(() => {
    if (!searchable) return undefined;
    const control = new AbortController();
    let timer;
    const load = async () => {
      try {
        const page = await fetchDirectory(wanted, null, control.signal);
        setDir((d) =>
          // A refresh leaves alone a list the user has read further pages of.
          d.of === wanted && d.pages > 1
            ? d
            : { of: wanted, pages: 1, entries: page.topics, next: page.next, error: null },
        );
      } catch (e) {
        if (e.name !== "AbortError") setDir({ of: wanted, pages: 0, entries: [], next: null, error: e.message });
      }
      timer = setTimeout(load, REFRESH_MS);
    };
    timer = setTimeout(load, 150); // typing: one request once it pauses
    return () => {
      control.abort();
      clearTimeout(timer);
    };
  }, [wanted, searchable]);

  useEffect(() => {
    if (!more) return undefined;
    const control = new AbortController();
    fetchDirectory(wanted, more, control.signal)
      .then((page) =>
        setDir((d) =>
          d.of === wanted
            ? { ...d, pages: d.pages + 1, entries: [...d.entries, ...page.topics], next: page.next }
            : d,
        ),
      )
      .catch((e) => e.name !== "AbortError" && setDir((d) => ({ ...d, error: e.message })))
      .finally(() => setMore(null));
    return () => control.abort();
  }, [more, wanted]);

  const current = searchable && dir.of === wanted;
  // While a search is on its way, the rows of the last answer that still match stay.
  const entries = current ? dir.entries : dir.entries.filter((e) => e.topic.startsWith(wanted));
  const complete = !current || dir.next === null;
  const rows = mergeListing(entries, allTopics(known, topics), wanted, complete);
  const listed = rows.filter((r) => r.listed).length;
  let note;
  if (!searchable) note = "Topics are lowercase letters, digits and . _ : -";
  else if (current && dir.error) note = `The topic directory cannot be read (${dir.error}): showing the topics this page knows.`;
  else if (!current) note = "Searching…";
  else note = `${listed} ${listed === 1 ? "topic" : "topics"} with recent events${dir.next ? " (more below)" : ""}, ${rows.length - listed} more this page knows.`;
  return (
    <section className="browser" id={id} aria-label="Topic browser" data-testid="topic-browser">
      <input
        type="search"
        value={prefix}
        placeholder="Search by prefix: metrics."
        aria-label="Search topics by prefix"
        onChange={(e) => setPrefix(e.target.value)}
      />
      <p className="note" data-testid="directory-note">
        {note}
      </p>
      <ul>
        {rows.map((r) => (
          <li key={r.topic} data-topic={r.topic} data-listed={r.listed}>
            <label>
              <input
                type="checkbox"
                checked={topics.includes(r.topic)}
                onChange={(e) => (e.target.checked ? addTopic(r.topic) : removeTopic(r.topic))}
              />
              <span className="name">{r.topic}</span>
            </label>
            <span className="figures">{rowFigures(r, current || !searchable)}</span>
          </li>
        ))}
        {rows.length === 0 && <li className="empty">No topic starts with “{prefix.trim()}”.</li>}
      </ul>
      {current && dir.next && (
        <button type="button" disabled={more !== null} onClick={() => setMore(dir.next)}>
          More topics
        </button>
      )}
    </section>
  );
}

export function TopicPicker() {
  const topics = useStore((s) => s.topics);
  const known = useStore((s) => s.known);
  const addTopic = useStore((s) => s.addTopic);
  const removeTopic = useStore((s) => s.removeTopic);
  const [text, setText] = useState("");
  const [problem, setProblem] = useState(null);
  const [browsing, setBrowsing] = useState(false);
  const browserId = useId();

  const submit = (e) => {
    e.preventDefault();
    const topic = text.trim();
    if (!TOPIC_RE.test(topic)) {
      setProblem("Topics are lowercase letters, digits and . _ : - (e.g. metrics.cpu or metrics.cpu:1s)");
      return;
    }
    setProblem(null);
    addTopic(topic);
    setText("");
  };

  return (
    <div className="topics">
      <form className="picker" onSubmit={submit}>
        <input
          list="known-topics"
          value={text}
          placeholder="Follow a topic: metrics.cpu, metrics.cpu:1s, …"
          aria-label="Topic"
          onChange={(e) => setText(e.target.value)}
        />
        <datalist id="known-topics">
          {known
            .filter((t) => !topics.includes(t))
            .map((t) => (
              <option key={t} value={t} />
            ))}
        </datalist>
        <button type="submit">Follow</button>
        <button
          type="button"
          aria-expanded={browsing}
          aria-controls={browserId}
          onClick={() => setBrowsing(!browsing)}
        >
          {browsing ? "Hide topics" : "Browse topics"}
        </button>
        <ul className="chips" aria-label="Following">
          {topics.map((t) => (
            <li key={t}>
              {t}
              <button
                type="button"
                className="icon"
                title={`Stop following ${t}`}
                aria-label={`Stop following ${t}`}
                onClick={() => removeTopic(t)}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
        {problem && <p className="error">{problem}</p>}
      </form>
      {browsing && <TopicBrowser id={browserId} />}
    </div>
  );
}
