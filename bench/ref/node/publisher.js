// Publisher for the Node reference: emits `update` to a topic's room through
// @socket.io/redis-emitter (what a worker process does with the Redis adapter), one emit
// per event. Driven by bench/ over stdin/stdout, the same line protocol as
// bench/publisher.py:
//   stdin:  {"topics": [...], "rate": events/s, "count": N}
//   stdout: {"published": N, "elapsed_s": S}
// Usage: node publisher.js REDIS_URL
"use strict";
const readline = require("readline");
const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");

const TICK_MS = 5;
const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(emitter, job) {
  const { topics, rate, count } = job;
  const pad = "x".repeat(job.pad || 0);
  const start = nowMs();
  let sent = 0;
  while (sent < count) {
    const due = Math.min(count, Math.floor(((nowMs() - start) / 1000) * rate) + 1);
    for (; sent < due; sent++) {
      const topic = topics[sent % topics.length];
      const t = nowMs();
      emitter.to(topic).emit("update", [
        { topic, id: `${Math.floor(t)}-${sent}`, ts: Math.floor(t), data: { t, seq: sent, s: job.step, pad } },
      ]);
    }
    if (sent < count) await sleep(TICK_MS);
  }
  return { published: sent, elapsed_s: (nowMs() - start) / 1000 };
}

async function main() {
  const client = createClient({ url: process.argv[2] || "redis://127.0.0.1:6379/0" });
  await client.connect();
  const emitter = new Emitter(client);
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const result = await run(emitter, JSON.parse(line));
    // node-redis pipelines commands; PING waits until every PUBLISH before it was sent.
    await client.ping();
    process.stdout.write(JSON.stringify(result) + "\n");
  }
  await client.quit();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
