import { useEffect, useState } from "react";
import { NOTICE_MS, useStore } from "../store.js";
import { clock } from "../time.js";

/** Whether the resume notice shows now: not dismissed and not yet expired. */
function noticeShows(resume, now) {
  if (resume.state === null || resume.dismissed) return false;
  return now - resume.at < (NOTICE_MS[resume.state] ?? 0);
}

export function ConnectionStatus() {
  const { status, attempt, transport, error } = useStore((s) => s.connection);
  const resume = useStore((s) => s.resume);
  const dismiss = useStore((s) => s.dismissNotice);
  const [now, setNow] = useState(() => Date.now());

  // Re-render when the notice expires.
  useEffect(() => {
    if (!noticeShows(resume, Date.now())) return undefined;
    const left = resume.at + NOTICE_MS[resume.state] - Date.now();
    const timer = setTimeout(() => setNow(Date.now()), Math.max(0, left) + 50);
    return () => clearTimeout(timer);
  }, [resume, now]);

  let label;
  if (status === "connected") label = `Connected · ${transport ?? "…"}`;
  else if (status === "reconnecting") label = attempt ? `Reconnecting… attempt ${attempt}` : "Reconnecting…";
  else if (status === "refused") label = `Refused: ${error}`;
  else label = "Connecting…";

  let notice = null;
  if (noticeShows(resume, Date.now())) {
    let text;
    if (resume.state === "recovered") text = `Resumed at ${clock(resume.at)}: no gap`;
    else {
      const recent = resume.gaps.filter((g) => resume.at - g.at < NOTICE_MS.gap);
      const topics = [...new Set(recent.map((g) => g.topic))].join(", ");
      text = `Gap at ${clock(resume.at)} in ${topics}`;
    }
    notice = (
      <span
        className={`resume ${resume.state === "gap" ? "gap" : "ok"}`}
        role="status"
        data-testid="resume-notice"
        title={resume.state === "gap" ? "History no longer held every missed event: the log and the charts mark where" : undefined}
      >
        <span className="text">{text}</span>
        <button type="button" className="icon dismiss" aria-label="Dismiss this notice" title="Dismiss" onClick={dismiss}>
          ×
        </button>
      </span>
    );
  }
  return (
    <div
      className="status"
      data-testid="connection"
      data-status={status}
      data-attempt={attempt}
      data-resume={resume.state ?? ""}
    >
      <span className={`dot ${status}`} aria-hidden="true" />
      <span className="label" role="status">
        {label}
      </span>
      {notice}
    </div>
  );
}
