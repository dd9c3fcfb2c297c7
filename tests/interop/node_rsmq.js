// Drives Node rsmq 0.12.4 for tests/rsmq_interop.rs.
//
// Usage: node node_rsmq.js <redis port> '<constructor options JSON>' '<operations JSON>'
// Operations: [{"op": "sendMessage", "args": {...}}, ...], run in order with the *Async
// methods. Prints one JSON array to stdout: {"ok": result} or {"err": {"name", "message"}}
// per operation.
"use strict";

const RedisSMQ = require("rsmq");

const [port, optionsJson, opsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");
const ops = JSON.parse(opsJson || "[]");
const rsmq = new RedisSMQ({ host: "127.0.0.1", port: Number(port), ...options });

(async () => {
  const results = [];
  for (const { op, args } of ops) {
    try {
      const value = op === "listQueues"
        ? await rsmq.listQueuesAsync()
        : await rsmq[op + "Async"](args || {});
      results.push({ ok: value });
    } catch (e) {
      results.push({ err: { name: e.name, message: e.message } });
    }
  }
  process.stdout.write(JSON.stringify(results) + "\n");
  // QUIT goes out after any realtime PUBLISH on the same connection.
  rsmq.quit();
})();
