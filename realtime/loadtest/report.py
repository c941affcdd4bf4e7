"""What `realtime loadtest` shows: the live progress line, the final table and the JSON
document (its fields are documented in the README and kept stable for CI)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from realtime.loadtest.runner import LoadTest

PROGRESS_INTERVAL_TTY_S = 0.25
PROGRESS_INTERVAL_LINES_S = 5.0


def build_result(test: LoadTest) -> dict[str, Any]:
    config = test.config
    c = test.counters
    expected = test.expected()
    polling_clients = sum(1 for s in test.sims if s.polling and s.subscribed)
    subscribed = sum(1 for s in test.sims if s.subscribed)
    loss = 1 - c.delivered / expected if expected else 0.0
    # Events a client never got: skipped ones (sequence jumps) and, at the end, the tail
    # it never caught up with (say, it came back after publishing had stopped).
    published = c.per_topic_published
    tail = sum(
        max(0, published.get(s.topic, 0) - 1 - s.last_seq) for s in test.sims if s.subscribed
    )
    missed = c.missed_in_gaps + tail
    latency = c.latency.summary((50, 95, 99))
    errors_total = sum(c.errors.values())
    ok = errors_total == 0 and loss <= config.max_loss
    if config.max_p99_ms is not None and (latency["p99"] or 0) > config.max_p99_ms:
        ok = False
    restart = None
    if test.restart is not None:
        restart = {
            **test.restart,
            "disconnects": c.disconnects,
            "reconnected": c.reconnects,
            "still_down": sum(1 for s in test.sims if s.down_since is not None),
            "reconnect_ms": c.reconnect.summary((50, 99)),
            "missed": missed,
        }
    return {
        "url": config.url,
        "config": {
            "clients": config.clients,
            "topics": config.topics,
            "rate": config.rate,
            "duration_s": config.duration_s,
            "ramp_concurrency": config.ramp_concurrency,
            "polling_share": config.polling_share,
            "payload_bytes": config.payload_bytes,
            "deflate": config.deflate,
            "stamped": config.stamped,
            "resume": config.resume,
        },
        "clients": {
            "requested": config.clients,
            "connected": subscribed,
            "websocket": subscribed - polling_clients,
            "polling": polling_clients,
            "failed": config.clients - subscribed,
        },
        "connect_ms": c.connect.summary((50, 95, 99)),
        "connects_per_s": round(subscribed / test.ramp_elapsed_s, 1)
        if test.ramp_elapsed_s
        else None,
        "published": {
            "events": c.published,
            "requests": c.publish_requests,
            "retries": c.publish_retries,
            "not_accepted": c.not_accepted,
            "duration_s": round(test.publish_elapsed_s, 3),
            "rate_per_s": round(c.published / test.publish_elapsed_s, 1)
            if test.publish_elapsed_s
            else None,
        },
        "delivery": {
            "expected": expected,
            "delivered": c.delivered,
            "ratio": round(c.delivered / expected, 6) if expected else None,
            "loss": round(loss, 6),
            "duplicates": c.duplicates,
            "gaps": c.gaps,
            "missed": missed,
            "latency_ms": latency,
        },
        "errors": {"total": errors_total, "by_kind": dict(c.errors), "first": c.first_error},
        "reconnects": {
            "disconnects": c.disconnects,
            "count": c.reconnects,
            "ms": c.reconnect.summary((50, 99)),
        },
        "restart": restart,
        "ok": ok,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def format_table(result: dict[str, Any]) -> str:
    config = result["config"]
    clients = result["clients"]
    delivery = result["delivery"]
    lat = delivery["latency_ms"]
    con = result["connect_ms"]
    pub = result["published"]
    rec = result["reconnects"]
    ratio = delivery["ratio"]
    rows = [
        ("target", result["url"]),
        (
            "load",
            f"{config['clients']:,} clients on {config['topics']:,} topics, "
            f"{config['rate']:g} events/s for {config['duration_s']:g} s",
        ),
        (
            "clients",
            f"{clients['connected']:,} connected ({clients['websocket']:,} websocket, "
            f"{clients['polling']:,} polling), {clients['failed']:,} failed",
        ),
        (
            "connect time",
            f"p50 {_ms(con['p50'])}  p95 {_ms(con['p95'])}  p99 {_ms(con['p99'])}  "
            f"({result['connects_per_s'] or 0:,.0f} connects/s)",
        ),
        (
            "published",
            f"{pub['events']:,} events in {pub['requests']:,} requests "
            f"({pub['rate_per_s'] or 0:,.1f}/s), {pub['retries']:,} retries, "
            f"{pub['not_accepted']:,} not accepted",
        ),
        (
            "delivered",
            f"{delivery['delivered']:,} / {delivery['expected']:,} expected"
            + (f" ({ratio:.4%})" if ratio is not None else ""),
        ),
        (
            "latency",
            f"p50 {_ms(lat['p50'])}  p95 {_ms(lat['p95'])}  p99 {_ms(lat['p99'])}  "
            f"max {_ms(lat['max'])}",
        ),
        (
            "order",
            f"{delivery['duplicates']:,} duplicates, {delivery['gaps']:,} gaps "
            f"({delivery['missed']:,} events skipped)",
        ),
        (
            "errors",
            f"{result['errors']['total']:,}"
            + (
                f"  {result['errors']['by_kind']}; first: {result['errors']['first']}"
                if result["errors"]["total"]
                else ""
            ),
        ),
        (
            "reconnects",
            f"{rec['count']:,} of {rec['disconnects']:,} disconnects"
            + (
                f", p50 {_ms(rec['ms']['p50'])} p99 {_ms(rec['ms']['p99'])}" if rec["count"] else ""
            ),
        ),
    ]
    restart = result.get("restart")
    if restart:
        what = restart.get("command") or f"kill -{restart.get('signal')} {restart.get('pid')}"
        rows.append(
            (
                "restart",
                f"at {restart['at_s']:g} s: {what}"
                + (f" (exit {restart['exit_code']})" if "exit_code" in restart else "")
                + f"; {restart['reconnected']:,} reconnected, "
                f"{restart['still_down']:,} still down, {restart['missed']:,} events missed",
            )
        )
    rows.append(("result", "PASS" if result["ok"] else "FAIL"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


class Progress:
    """One line rewritten in place on a terminal; a line every few seconds otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = 0.0
        self._width = 0

    def __call__(self, test: LoadTest, phase: str) -> None:
        now = time.monotonic()
        interval = PROGRESS_INTERVAL_TTY_S if self.tty else PROGRESS_INTERVAL_LINES_S
        if now - self._last < interval and phase != "done":
            return
        self._last = now
        line = self.line(test, phase, now)
        if self.tty:
            self.out.write("\r" + line.ljust(self._width))
            self._width = len(line)
            if phase == "done":
                self.out.write("\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()

    @staticmethod
    def line(test: LoadTest, phase: str, now: float) -> str:
        c = test.counters
        elapsed = now - test.started
        if phase == "ramp":
            done = sum(1 for s in test.sims if s.subscribed)
            return (
                f"[{elapsed:5.1f}s] ramp: {done:,}/{test.config.clients:,} subscribed, "
                f"{sum(c.errors.values()):,} errors"
            )
        p99 = c.latency.percentile(99)
        return (
            f"[{elapsed:5.1f}s] {phase}: published {c.published:,}, delivered "
            f"{c.delivered:,}/{test.expected():,}, p99 "
            + ("-" if p99 != p99 else f"{p99:,.1f} ms")
            + f", connected {test.connected:,}, errors {sum(c.errors.values()):,}, "
            f"reconnects {c.reconnects:,}"
        )
