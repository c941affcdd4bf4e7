import { useId, useState } from "react";
import { TOPIC_RE, useStore } from "../store.js";
import { allTopics, byPrefix } from "../topics.js";

/** Every topic this page knows of, narrowed by a prefix search; a checkbox follows one. */
function TopicBrowser({ id }) {
  const topics = useStore((s) => s.topics);
  const known = useStore((s) => s.known);
  const addTopic = useStore((s) => s.addTopic);
  const removeTopic = useStore((s) => s.removeTopic);
  const [prefix, setPrefix] = useState("");
  const all = allTopics(known, topics);
  const shown = byPrefix(all, prefix);
  return (
    <section className="browser" id={id} aria-label="Topic browser" data-testid="topic-browser">
      <input
        type="search"
        value={prefix}
        placeholder="Search by prefix: metrics."
        aria-label="Search topics by prefix"
        onChange={(e) => setPrefix(e.target.value)}
      />
      <p className="note">
        {shown.length} of {all.length} topics this page has seen or followed (the server has no topic directory yet).
      </p>
      <ul>
        {shown.map((t) => (
          <li key={t}>
            <label>
              <input
                type="checkbox"
                checked={topics.includes(t)}
                onChange={(e) => (e.target.checked ? addTopic(t) : removeTopic(t))}
              />
              <span>{t}</span>
            </label>
          </li>
        ))}
        {shown.length === 0 && <li className="empty">No topic starts with “{prefix.trim()}”.</li>}
      </ul>
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
