#!/usr/bin/env python3
"""A publisher made with the real fedmsg library (PyPI fedmsg 1.1.7), as Fedora's apps publish:
fedmsg.init() binds the endpoint and sleeps `post_init_sleep` (1 s here), then every
fedmsg.publish() sends an envelope fedmsg builds itself (its own msg_id, timestamp and `i`).
It binds at a random moment, sends COUNT messages paced, says "sent COUNT messages" and stays
bound for --linger seconds (a test may kill it then, as a crash would).

    fedmsg_library_publish.py ENDPOINT COUNT [--bind-after-random MAX] [--interval S] [--linger S]

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint", help="e.g. tcp://127.0.0.1:9940")
    parser.add_argument("count", type=int)
    parser.add_argument("--bind-after-random", type=float, default=0.0)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--linger", type=float, default=1.0)
    args = parser.parse_args()

    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "statscache_test.py")
    with open(path, "w") as config_file:
        config_file.write(
            "config = dict(endpoints={'statscache.test': [%r]}, topic_prefix='org.fedoraproject',"
            " environment='dev', sign_messages=False, validate_signatures=False,"
            " post_init_sleep=1.0, high_water_mark=0, zmq_enabled=True)\n" % args.endpoint
        )
    config = fedmsg.config.load_config([], None, filenames=[path])
    config["name"] = "statscache.test"
    time.sleep(random.uniform(0, args.bind_after_random))
    fedmsg.init(**config)
    for index in range(args.count):
        fedmsg.publish(topic="edge.test", modname="statscache", msg={"index": index})
        if args.interval:
            time.sleep(args.interval)
    print(f"sent {args.count} messages", flush=True)
    time.sleep(args.linger)
    return 0


if __name__ == "__main__":
    sys.exit(main())
