// Reference server for bench/: stock socket.io 4.8 with @socket.io/redis-adapter.
// Same wire contract as realtime for what the benchmark uses: `subscribe {topic}` joins the
// room and acks {ok, topic}; `update` events arrive from the publisher through Redis.
// With JWT_SECRET set (bench/storm.py), the handshake needs `auth: {token}`, an HS256 JWT
// verified with jsonwebtoken whose `topics` claim must allow the topic, and
// `subscribe {topic, snapshot: n}` answers with the newest n entries of the topic's
// history stream (HISTORY_PREFIX + "topic:" + topic, XREVRANGE, as realtime does) in the
// ack's `events`, the same work realtime does for a subscribe with a snapshot.
// Usage: [JWT_SECRET=...] [HISTORY_PREFIX=bench:] node server.js PORT REDIS_URL
"use strict";
const http = require("http");
const jwt = require("jsonwebtoken");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const SECRET = process.env.JWT_SECRET || "";
const PREFIX = process.env.HISTORY_PREFIX || "bench:";

// The same glob rules as realtime's grants: `*` any run of characters, `?` one.
const patterns = new Map();
function allows(globs, topic) {
  return globs.some((glob) => {
    let re = patterns.get(glob);
    if (!re) {
      const body = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
      re = new RegExp(`^${body}$`);
      patterns.set(glob, re);
    }
    return re.test(topic);
  });
}

function asEvent(topic, entry) {
  const { id, message } = entry;
  return { topic, id, ts: Number(message.ts), data: JSON.parse(message.data) };
}

async function main() {
  const port = Number(process.argv[2] || 8090);
  const url = process.argv[3] || "redis://127.0.0.1:6379/0";
  const pub = createClient({ url });
  const sub = pub.duplicate();
  const reader = pub.duplicate(); // history reads, apart from the adapter's publishes
  await Promise.all([pub.connect(), sub.connect(), reader.connect()]);
  const httpServer = http.createServer((req, res) => {
    res.writeHead(req.url === "/readyz" ? 200 : 404).end();
  });
  const io = new Server(httpServer, { adapter: createAdapter(pub, sub) });
  if (SECRET) {
    io.use((socket, next) => {
      const token = socket.handshake.auth && socket.handshake.auth.token;
      if (typeof token !== "string") return next(new Error("a token is required"));
      jwt.verify(token, SECRET, { algorithms: ["HS256"] }, (err, claims) => {
        if (err) return next(new Error("invalid token"));
        if (!Array.isArray(claims.topics)) return next(new Error("no topics claim"));
        socket.data.topics = claims.topics;
        next();
      });
    });
  }
  io.on("connection", (socket) => {
    socket.on("subscribe", async (payload, ack) => {
      const reply = typeof ack === "function" ? ack : () => {};
      const topic = payload && payload.topic;
      if (typeof topic !== "string") {
        reply({ ok: false, error: { code: "invalid" } });
        return;
      }
      if (SECRET && !allows(socket.data.topics, topic)) {
        reply({ ok: false, error: { code: "forbidden" } });
        return;
      }
      socket.join(topic);
      const snapshot = Number(payload.snapshot) || 0;
      if (snapshot <= 0) {
        reply({ ok: true, topic });
        return;
      }
      try {
        const newest = await reader.xRevRange(`${PREFIX}topic:${topic}`, "+", "-", { COUNT: snapshot });
        const events = newest.reverse().map((entry) => asEvent(topic, entry));
        const since = events.length ? events[events.length - 1].id : "0-0";
        reply({ ok: true, topic, events, since });
      } catch (err) {
        reply({ ok: false, error: { code: "unavailable" } });
      }
    });
  });
  httpServer.listen(port, "127.0.0.1");
  const stop = () => io.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
