"""PyRSMQ 0.6.1 throughput for tests/rsmq_bench.rs.

Usage: python3 py_bench.py <redis port> <queue> <send|receive_delete> <messages> <body bytes> <callers>

The queue must exist. Runs `callers` threads, each with its own RedisSMQ (its own connection),
each sending, or receiving then deleting, messages/callers messages one at a time: threads are
how PyRSMQ's users scale it. Prints {"messages", "seconds", "cpu_us"} as JSON, cpu_us being
this process's user+sys time over the timed part.
"""

import json
import resource
import sys
import threading
import time

from rsmq import RedisSMQ


def cpu_us():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e6


def main():
    port, qname, op = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    count, size, callers = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    per = count // callers
    body = "x" * size
    queues = [RedisSMQ(host="127.0.0.1", port=port) for _ in range(callers)]
    errors = []

    def send(queue):
        for _ in range(per):
            queue.sendMessage(qname=qname, message=body).execute()

    def receive_delete(queue):
        for _ in range(per):
            msg = queue.receiveMessage(qname=qname).execute()
            if not msg or not msg.get("id"):
                errors.append("queue empty")
                return
            queue.deleteMessage(qname=qname, id=msg["id"]).execute()

    work = send if op == "send" else receive_delete
    threads = [threading.Thread(target=work, args=(q,)) for q in queues]
    cpu, start = cpu_us(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds, cpu = time.perf_counter() - start, cpu_us() - cpu
    if errors:
        sys.exit(f"PyRSMQ {op}: {errors[0]}")
    print(json.dumps({"messages": per * callers, "seconds": seconds, "cpu_us": cpu}))


if __name__ == "__main__":
    main()
