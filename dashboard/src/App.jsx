import { ChartCard } from "./components/ChartCard.jsx";
import { ConnectionStatus } from "./components/ConnectionStatus.jsx";
import { EventLog } from "./components/EventLog.jsx";
import { PerfPanel } from "./components/PerfPanel.jsx";
import { RangeControl } from "./components/RangeControl.jsx";
import { TopicPicker } from "./components/TopicPicker.jsx";
import { useStore } from "./store.js";

export function App() {
  const topics = useStore((s) => s.topics);
  return (
    <div className="app">
      <header className="top">
        <h1>
          realtime <span className="sub">live dashboard</span>
        </h1>
        <ConnectionStatus />
        <PerfPanel />
      </header>
      <TopicPicker />
      <RangeControl />
      <section className="charts">
        {topics.length === 0 && <p className="empty">Pick a topic above to chart it.</p>}
        {topics.map((topic) => (
          <ChartCard key={topic} topic={topic} />
        ))}
      </section>
      <EventLog />
    </div>
  );
}
