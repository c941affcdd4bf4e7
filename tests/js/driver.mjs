// A remote control for one real socket.io-client (npm, 4.x), driven by the Python tests.
//
// Commands arrive on stdin, one JSON object a line: {"id": n, "cmd": "...", ...}.
// Each gets one reply line {"id": n, "ok": true, "result": ...} or {"id": n, "ok": false,
// "error": "..."}. Everything the socket does is reported as it happens, one line each:
// {"event": "open" | "connect" | "disconnect" | "connect_error" | "reconnect_attempt" | "upgrade"
//  | "update" | "events" | "subscribed" | "gap" | "subscribe_error", ...}.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";
import { Subscriptions } from "../../realtime/static/realtime-client.js";

let socket = null;
let subs = null;
// Engine.IO message packets by payload kind: JSON only means no binary ever arrives.
const packets = { text: 0, binary: 0, types: {} };

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function describeError(error) {
  if (error === undefined || error === null) return null;
  if (error instanceof Error) {
    return { message: error.message, type: error.type ?? null, data: error.data ?? null };
  }
  return error;
}

function watchEngine(manager) {
  const engine = manager.engine;
  send({ event: "open", transport: engine.transport.name });
  engine.on("upgrade", (transport) => send({ event: "upgrade", transport: transport.name }));
  engine.on("packet", (packet) => {
    if (packet.type !== "message") return;
    if (typeof packet.data === "string") {
      packets.text += 1;
      const type = packet.data[0];
      packets.types[type] = (packets.types[type] ?? 0) + 1;
    } else {
      packets.binary += 1;
    }
  });
}

function transportName() {
  return socket?.io?.engine?.transport?.name ?? null;
}

async function connect({
  url,
  options = {},
  helper = false,
  subscribeOptions = {},
  anyEvent = false,
  legacy = false,
}) {
  socket = io(url, { forceNew: true, ...options });
  // Every other event, as an `any` note (an extension's events: tests/test_extensions.py).
  if (anyEvent) socket.onAny((name, ...args) => name !== "update" && send({ event: "any", name, args }));
  // A socket.io-client before 4.6 has no `recovered`: the helper then uses the resume token.
  if (legacy) delete socket.recovered;
  socket.io.on("open", () => watchEngine(socket.io));
  socket.io.on("reconnect_attempt", (attempt) => send({ event: "reconnect_attempt", attempt }));
  socket.io.on("reconnect", (attempt) => send({ event: "reconnect", attempt }));
  socket.on("connect", () =>
    send({ event: "connect", transport: transportName(), sid: socket.id, recovered: socket.recovered }),
  );
  socket.on("disconnect", (reason, details) =>
    send({ event: "disconnect", reason, details: describeError(details) }),
  );
  socket.on("connect_error", (error) =>
    send({ event: "connect_error", error: describeError(error), active: socket.active }),
  );
  if (helper) {
    subs = new Subscriptions(socket, {
      subscribeOptions,
      onEvents: (events) => send({ event: "events", events }),
      onSubscribed: (topic, ack, { resumed }) => send({ event: "subscribed", topic, ack, resumed }),
      onGap: (topic, ack) => send({ event: "gap", topic, ack }),
      onError: (topic, error) => send({ event: "subscribe_error", topic, error: describeError(error) }),
    });
  } else {
    socket.on("update", (events) => send({ event: "update", events }));
  }
  return new Promise((resolve) => {
    const done = (result) => {
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      resolve(result);
    };
    const onConnect = () => done({ connected: true, transport: transportName(), sid: socket.id });
    const onError = (error) =>
      done({ connected: false, error: describeError(error), active: socket.active });
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

const commands = {
  connect,
  async emit({ event, data, timeoutMs = 10000 }) {
    return socket.timeout(timeoutMs).emitWithAck(event, data);
  },
  // Bytes in (base64), the ack's arguments out, bytes as {base64}.
  async emitBinary({ event, base64, timeoutMs = 10000 }) {
    const ack = await new Promise((resolve, reject) =>
      socket
        .timeout(timeoutMs)
        .emit(event, Buffer.from(base64, "base64"), (error, ...args) => (error ? reject(error) : resolve(args))),
    );
    return ack.map((a) => (ArrayBuffer.isView(a) ? { base64: Buffer.from(a).toString("base64") } : a));
  },
  async subscribe({ topic }) {
    return subs.subscribe(topic);
  },
  async unsubscribe({ topic }) {
    return subs.unsubscribe(topic);
  },
  async lastId({ topic }) {
    return subs.lastId(topic);
  },
  async state() {
    return {
      connected: socket?.connected ?? false,
      active: socket?.active ?? false,
      transport: transportName(),
      packets,
    };
  },
  async disconnect() {
    socket?.disconnect();
    return true;
  },
  // A network drop as the client sees it: the transport closes, the socket reconnects.
  async dropTransport() {
    socket.io.engine.close();
    return true;
  },
};

const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  if (!line.trim()) return;
  const { id, cmd, ...args } = JSON.parse(line);
  const command = commands[cmd];
  if (command === undefined) {
    send({ id, ok: false, error: `unknown command ${cmd}` });
    return;
  }
  try {
    send({ id, ok: true, result: (await command(args)) ?? null });
  } catch (error) {
    send({ id, ok: false, error: String(error?.stack ?? error) });
  }
});
// stdin closed: the test is done with us.
lines.on("close", () => {
  socket?.disconnect();
  process.exit(0);
});
