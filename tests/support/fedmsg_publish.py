#!/usr/bin/env python3
"""A real fedmsg publisher for tests and the demo: sends JSON Lines envelopes over ZeroMQ
in fedmsg's wire format, the two-frame multipart [topic, json envelope].

It binds an XPUB socket (a PUB that also sees subscriptions) and waits until the expected
number of subscribers have subscribed, because a PUB silently drops what it sends before a
subscription arrives. Lines that are not JSON objects with a topic are sent as-is with the
topic frame "garbage", so the ingestor's handling of bad input can be exercised too. Hostile
multipart messages of any shape come from --frames files: a sequence of messages, each a
big-endian u32 frame count, then per frame a u32 length and the bytes.

Or, as a publisher in production behaves (it knows nothing of its subscribers), it binds at a
random moment (--bind-after-random MAX seconds), sends a fixed time after binding
(--send-after SECONDS) whoever listens, paced (--interval SECONDS, or --rate messages a
second on a fixed schedule), and stays bound for --linger seconds (a test may kill it then, as
a crash would). --heartbeat-ivl MS sets libzmq's ZMTP heartbeats (ZMQ_HEARTBEAT_IVL, and
ZMQ_HEARTBEAT_TIMEOUT with --heartbeat-timeout MS): the publisher PINGs its subscribers and
drops one that does not answer.

    fedmsg_publish.py ENDPOINT [FILE...] [--subscribers N] [--single-frame TEXT] [--frames BIN]
                      [--bind-after-random MAX] [--send-after SECONDS] [--interval SECONDS]
                      [--rate PER_SECOND] [--heartbeat-ivl MS] [--heartbeat-timeout MS]
"""
import argparse
import json
import random
import struct
import sys
import time

import zmq


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint", help="e.g. tcp://127.0.0.1:9940")
    parser.add_argument("files", nargs="*", help="JSON Lines files of envelopes")
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for subscribers")
    parser.add_argument("--linger", type=float, default=2.0, help="seconds to keep the socket open after sending")
    parser.add_argument("--single-frame", action="append", default=[], help="also send this text as a one-frame message")
    parser.add_argument("--frames", action="append", default=[], help="also send the multipart messages of this binary file")
    parser.add_argument("--bind-after-random", type=float, default=0.0, help="bind after a random delay of up to this many seconds")
    parser.add_argument("--send-after", type=float, default=None, help="send this many seconds after binding, without waiting for subscribers")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between messages")
    parser.add_argument("--rate", type=float, default=0.0, help="messages a second, on a fixed schedule")
    parser.add_argument("--heartbeat-ivl", type=int, default=0, help="ZMTP heartbeat interval, milliseconds")
    parser.add_argument("--heartbeat-timeout", type=int, default=-1, help="ZMTP heartbeat timeout, milliseconds")
    args = parser.parse_intermixed_args()

    bind_delay = random.uniform(0, args.bind_after_random)
    print(f"binding after {bind_delay:.3f}s", flush=True)
    time.sleep(bind_delay)
    context = zmq.Context()
    socket = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.SNDHWM, 0)
    # Pass every subscription up, not only the first per topic: each subscriber is counted.
    socket.setsockopt(zmq.XPUB_VERBOSE, 1)
    if args.heartbeat_ivl:
        socket.setsockopt(zmq.HEARTBEAT_IVL, args.heartbeat_ivl)
        if args.heartbeat_timeout >= 0:
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, args.heartbeat_timeout)
    socket.bind(args.endpoint)
    subscribed = 0
    if args.send_after is not None:
        time.sleep(args.send_after)
    else:
        deadline = time.time() + args.wait
        while subscribed < args.subscribers:
            if socket.poll(timeout=max(0, int((deadline - time.time()) * 1000))) == 0:
                print(f"only {subscribed} of {args.subscribers} subscribers after {args.wait}s", file=sys.stderr)
                return 1
            event = socket.recv()
            if event[:1] == b"\x01":
                subscribed += 1
    sent = 0
    started = time.monotonic()
    for text in args.single_frame:
        socket.send(text.encode())
        sent += 1
    for path in args.files:
        with open(path, "rb") as lines:
            for line in lines:
                line = line.rstrip(b"\n")
                if not line:
                    continue
                try:
                    topic = json.loads(line)["topic"].encode()
                except Exception:
                    topic = b"garbage"
                socket.send_multipart([topic, line])
                sent += 1
                if args.interval:
                    time.sleep(args.interval)
                if args.rate:
                    # On schedule, whatever each send and sleep took.
                    late_by = time.monotonic() - (started + sent / args.rate)
                    if late_by < 0:
                        time.sleep(-late_by)
    for path in args.frames:
        for frames in read_frames(path):
            socket.send_multipart(frames)
            sent += 1
    print(f"sent {sent} messages", flush=True)
    time.sleep(args.linger)
    print(f"published {sent} messages to {subscribed} subscribers", flush=True)
    socket.close()
    context.term()
    return 0


def read_frames(path):
    """The multipart messages of a --frames file, in order."""
    with open(path, "rb") as data:
        while True:
            header = data.read(4)
            if not header:
                return
            (count,) = struct.unpack(">I", header)
            frames = []
            for _ in range(count):
                (length,) = struct.unpack(">I", data.read(4))
                frames.append(data.read(length))
            yield frames


if __name__ == "__main__":
    sys.exit(main())
