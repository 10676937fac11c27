#!/usr/bin/env python3
"""A publisher made with the real fedmsg library (PyPI fedmsg 1.1.7), as Fedora's apps publish:
fedmsg.init() binds the endpoint and sleeps `post_init_sleep` (1 s here), then every
fedmsg.publish() sends an envelope fedmsg builds itself (its own msg_id, timestamp and `i`).
It binds at a random moment, sends COUNT messages paced, says "sent COUNT messages" and stays
bound for --linger seconds (a test may kill it then, as a crash would).

With --until-connected S, the one second after binding starts only once a subscriber has
connected (waiting at most S seconds): fedmsg's PUB socket drops what it sends before a
subscription arrives, and on a loaded machine one second from the bind may not be enough for a
subscriber to notice the endpoint. A test of what the library sends (not of how fast the
subscriber joins) uses it.

    fedmsg_library_publish.py ENDPOINT COUNT [--bind-after-random MAX] [--interval S] [--linger S]
                              [--until-connected S]

Runs with the Python environment the datagrepper tests install (it has fedmsg).
"""
import argparse
import os
import random
import sys
import tempfile
import time

import fedmsg
import fedmsg.config
import zmq
import zmq.utils.monitor


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint", help="e.g. tcp://127.0.0.1:9940")
    parser.add_argument("count", type=int)
    parser.add_argument("--bind-after-random", type=float, default=0.0)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--linger", type=float, default=1.0)
    parser.add_argument("--until-connected", type=float, default=None)
    args = parser.parse_args()
    post_init_sleep = 1.0 if args.until_connected is None else 0.0

    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "statscache_test.py")
    with open(path, "w") as config_file:
        config_file.write(
            "config = dict(endpoints={'statscache.test': [%r]}, topic_prefix='org.fedoraproject',"
            " environment='dev', sign_messages=False, validate_signatures=False,"
            " post_init_sleep=%r, high_water_mark=0, zmq_enabled=True)\n"
            % (args.endpoint, post_init_sleep)
        )
    config = fedmsg.config.load_config([], None, filenames=[path])
    config["name"] = "statscache.test"
    time.sleep(random.uniform(0, args.bind_after_random))
    context = fedmsg.init(**config)
    if args.until_connected is not None:
        wait_until_connected(context.publisher, args.until_connected)
        time.sleep(1.0)
    for index in range(args.count):
        fedmsg.publish(topic="edge.test", modname="statscache", msg={"index": index})
        if args.interval:
            time.sleep(args.interval)
    print(f"sent {args.count} messages", flush=True)
    time.sleep(args.linger)
    return 0


def wait_until_connected(socket, timeout):
    """Waits for a subscriber's handshake on `socket`, at most `timeout` seconds. One that
    connected before the monitor started is not seen: the wait then ends at the timeout, with
    that subscriber in place."""
    monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        if monitor.poll(timeout=int(timeout * 1000)):
            zmq.utils.monitor.recv_monitor_message(monitor)
    finally:
        socket.disable_monitor()
        monitor.close()


if __name__ == "__main__":
    sys.exit(main())
