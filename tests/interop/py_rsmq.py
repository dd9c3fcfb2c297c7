"""Drives PyRSMQ 0.6.1 for tests/rsmq_interop.rs.

Usage: python3 py_rsmq.py <redis port> '<RedisSMQ kwargs JSON>' '<operations JSON>'
Operations: [{"op": "sendMessage", "args": {...}}, ...], each run as
``getattr(queue, op)(**args).execute()``. Prints one JSON array to stdout:
{"ok": result} or {"err": {"name": exception class, "message": str}} per operation.
"""

import json
import sys

from rsmq import RedisSMQ


def main():
    port, options, ops = sys.argv[1], json.loads(sys.argv[2] or "{}"), json.loads(sys.argv[3])
    # PyRSMQ prints to stdout in places (e.g. "Detected :"); keep stdout for the JSON.
    out, sys.stdout = sys.stdout, sys.stderr
    queue = RedisSMQ(host="127.0.0.1", port=int(port), **options)
    results = []
    for op in ops:
        try:
            value = getattr(queue, op["op"])(**op.get("args", {})).execute()
            if isinstance(value, set):
                value = sorted(value)
            results.append({"ok": value})
        except Exception as e:  # noqa: BLE001 - every failure is reported to the test
            results.append({"err": {"name": type(e).__name__, "message": str(e)}})
    out.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
