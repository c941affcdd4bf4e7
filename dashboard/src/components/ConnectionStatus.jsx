import { useStore } from "../store.js";

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

export function ConnectionStatus() {
  const { status, attempt, transport, error } = useStore((s) => s.connection);
  const resume = useStore((s) => s.resume);
  let label;
  if (status === "connected") label = `Connected · ${transport ?? "…"}`;
  else if (status === "reconnecting") label = attempt ? `Reconnecting… attempt ${attempt}` : "Reconnecting…";
  else if (status === "refused") label = `Refused: ${error}`;
  else label = "Connecting…";

  let resumeNote = null;
  if (resume.state === "recovered") {
    resumeNote = <span className="resume ok">Resumed at {clock(resume.at)}: no gap</span>;
  } else if (resume.state === "gap") {
    const topics = [...new Set(resume.gaps.map((g) => g.topic))].join(", ");
    resumeNote = (
      <span className="resume gap" title="History no longer held every missed event">
        Gap at {clock(resume.at)} in {topics}
      </span>
    );
  }
  return (
    <div className="status" data-testid="connection" data-status={status} data-attempt={attempt} data-resume={resume.state ?? ""}>
      <span className={`dot ${status}`} />
      <span className="label">{label}</span>
      {resumeNote}
    </div>
  );
}
