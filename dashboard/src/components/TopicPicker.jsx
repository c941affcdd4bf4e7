import { useState } from "react";
import { TOPIC_RE, useStore } from "../store.js";

export function TopicPicker() {
  const topics = useStore((s) => s.topics);
  const known = useStore((s) => s.known);
  const addTopic = useStore((s) => s.addTopic);
  const removeTopic = useStore((s) => s.removeTopic);
  const [text, setText] = useState("");
  const [problem, setProblem] = useState(null);

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
      <ul className="chips">
        {topics.map((t) => (
          <li key={t}>
            {t}
            <button type="button" className="icon" title={`Stop following ${t}`} onClick={() => removeTopic(t)}>
              ×
            </button>
          </li>
        ))}
      </ul>
      {problem && <p className="error">{problem}</p>}
    </form>
  );
}
