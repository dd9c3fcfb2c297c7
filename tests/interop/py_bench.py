"""PyRSMQ 0.6.1 throughput for tests/rsmq_bench.rs.

Usage: python3 py_bench.py <redis port> <messages> <body bytes>
Sends the messages one by one into a fresh queue, then receives and deletes them one by
one, and prints {"send_per_s": .., "receive_delete_per_s": ..} as JSON.
"""

import json
import sys
import time

from rsmq import RedisSMQ


def main():
    port, count, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    queue = RedisSMQ(host="127.0.0.1", port=port)
    queue.createQueue(qname="pybench").execute()
    body = "x" * size

    start = time.perf_counter()
    for _ in range(count):
        queue.sendMessage(qname="pybench", message=body).execute()
    send_s = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(count):
        msg = queue.receiveMessage(qname="pybench").execute()
        queue.deleteMessage(qname="pybench", id=msg["id"]).execute()
    receive_s = time.perf_counter() - start

    print(json.dumps({"send_per_s": count / send_s, "receive_delete_per_s": count / receive_s}))


if __name__ == "__main__":
    main()
