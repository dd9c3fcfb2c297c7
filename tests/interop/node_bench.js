// Node rsmq 0.12.4 throughput for tests/rsmq_bench.rs.
//
// Usage: node node_bench.js <redis port> <queue> <send|receive_delete> <messages> <body bytes> <callers>
//
// The queue must exist. Runs `callers` concurrent async loops on one RedisSMQ (one connection,
// commands pipelined: how Node users scale it), each sending, or receiving then deleting,
// messages/callers messages. Prints {"messages", "seconds", "cpu_us"} as JSON, cpu_us being
// this process's user+sys time over the timed part.
"use strict";

const RedisSMQ = require("rsmq");

const [port, qname, op, count, size, callers] = process.argv.slice(2);
const per = Math.floor(Number(count) / Number(callers));
const body = "x".repeat(Number(size));
const rsmq = new RedisSMQ({ host: "127.0.0.1", port: Number(port) });

const send = async () => {
  for (let i = 0; i < per; i++) {
    await rsmq.sendMessageAsync({ qname, message: body });
  }
};
const receiveDelete = async () => {
  for (let i = 0; i < per; i++) {
    const msg = await rsmq.receiveMessageAsync({ qname });
    if (!msg.id) throw new Error("queue empty");
    await rsmq.deleteMessageAsync({ qname, id: msg.id });
  }
};

(async () => {
  // Connected before timing: one round trip the measurement should not carry.
  await rsmq.getQueueAttributesAsync({ qname });
  const work = op === "send" ? send : receiveDelete;
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Number(callers) }, work));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpu);
  process.stdout.write(
    JSON.stringify({ messages: per * Number(callers), seconds, cpu_us: used.user + used.system }) + "\n",
  );
  rsmq.quit();
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
