// Reference server for bench/: stock socket.io 4.8 with @socket.io/redis-adapter.
// Same wire contract as realtime for what the benchmark uses: `subscribe {topic}` joins the
// room and acks {ok, topic}; `update` events arrive from the publisher through Redis.
// Usage: node server.js PORT REDIS_URL
"use strict";
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const port = Number(process.argv[2] || 8090);
  const url = process.argv[3] || "redis://127.0.0.1:6379/0";
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const httpServer = http.createServer((req, res) => {
    res.writeHead(req.url === "/readyz" ? 200 : 404).end();
  });
  const io = new Server(httpServer, { adapter: createAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("subscribe", (payload, ack) => {
      const topic = payload && payload.topic;
      if (typeof topic !== "string") {
        if (typeof ack === "function") ack({ ok: false, error: { code: "invalid" } });
        return;
      }
      socket.join(topic);
      if (typeof ack === "function") ack({ ok: true, topic });
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
