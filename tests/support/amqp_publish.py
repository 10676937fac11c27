#!/usr/bin/env python3
"""Publishes fedmsg corpus lines to RabbitMQ with the real fedora-messaging library.

usage: amqp_publish.py AMQP_URL [--queue NAME]... [--native] [--names] [--poison] [--rate N]
                       [--bulk] [--sent-at-from-envelope] FILE...

Each line of each FILE (a fedmsg envelope) becomes a fedora-messaging Message: topic = the
envelope's topic, body = its "msg", headers = its "headers". By default the message id is the
envelope's msg_id, as fedmsg-migration-tools' zmq->amqp bridge did; --native (and an envelope
without msg_id) leaves fedora-messaging's own id (a uuid4). --names gives each message usernames user<k%3> and packages
pkg<k%2> (headers fedora_messaging_user_*/rpm_*), as a schema would. --queue declares the durable
queue NAME bound to amq.topic "#" first (as the ingestor does), so nothing published before the
ingestor starts is lost. --poison first sends three unusable deliveries with pika: a body that is
not JSON, one without message_id, one larger than NATS's payload limit. --rate sends N messages
a second. --sent-at-from-envelope stamps each message's `sent-at` with the envelope's
`timestamp` instead of the publishing clock, as the zmq->amqp bridge stamps its copies with its
own clock (the test chooses that clock's delay). A publish that fails (broker restarting) is
retried with the same id. --bulk (for
benchmarks) sends the same messages, made by fedora-messaging, over one pika channel without
waiting for confirms, and prints nothing per message.

Prints one JSON line per published message: id, topic, sent_at, usernames, packages.
"""
import datetime
import json
import os
import sys
import tempfile
import time

args = sys.argv[1:]
url = args.pop(0)
queues = []
native = names = poison = bulk = sent_at_from_envelope = False
rate = 0.0
files = []
while args:
    arg = args.pop(0)
    if arg == "--queue":
        queues.append(args.pop(0))
    elif arg == "--bulk":
        bulk = True
    elif arg == "--native":
        native = True
    elif arg == "--names":
        names = True
    elif arg == "--poison":
        poison = True
    elif arg == "--sent-at-from-envelope":
        sent_at_from_envelope = True
    elif arg == "--rate":
        rate = float(args.pop(0))
    else:
        files.append(arg)

config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
config.write(f'amqp_url = "{url}"\npublish_exchange = "amq.topic"\ntopic_prefix = ""\n')
config.close()
os.environ["FEDORA_MESSAGING_CONF"] = config.name

import pika  # noqa: E402  (after the configuration is in place)
from fedora_messaging import api, message  # noqa: E402

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
for queue in queues:
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, "amq.topic", "#")
if poison:
    topic = "org.fedoraproject.test.poison.sent"
    persistent = dict(delivery_mode=2, content_type="application/json")
    channel.basic_publish(
        "amq.topic", topic, b"this is not json",
        pika.BasicProperties(message_id="poison-not-json", **persistent))
    channel.basic_publish(
        "amq.topic", topic, b'{"no": "id"}', pika.BasicProperties(**persistent))
    huge = json.dumps({"blob": "x" * (2 * 1024 * 1024)}).encode()
    channel.basic_publish(
        "amq.topic", topic, huge,
        pika.BasicProperties(message_id="poison-too-large", **persistent))

if not bulk:
    connection.close()  # idle, it would miss heartbeats during slow publishing


class Named(message.Message):
    """A schema that names users and packages (user<k%3>, pkg<k%2>), as real schemas do."""

    k = 0

    @property
    def usernames(self):
        return [f"user{self.k % 3}"]

    @property
    def packages(self):
        return [f"pkg{self.k % 2}"]


# fedora-messaging names a message's schema in a header: register this one as an entry point would.
message._schema_name_to_class["statscache.test.named"] = Named
message._class_to_schema_name[Named] = "statscache.test.named"


def message_class(k):
    if not names:
        return message.Message
    Named.k = k  # read by the header filter when the message is made
    return Named


k = 0
for path in files:
    with open(path) as lines:
        for line in lines:
            if not line.strip():
                continue
            envelope = json.loads(line)
            headers = envelope.get("headers") if isinstance(envelope.get("headers"), dict) else None
            outgoing = message_class(k)(
                body=envelope.get("msg") or {}, topic=envelope["topic"], headers=headers)
            if not native and envelope.get("msg_id"):
                outgoing.id = envelope["msg_id"]
            if sent_at_from_envelope:
                moment = datetime.datetime.fromtimestamp(envelope["timestamp"], datetime.timezone.utc)
                outgoing._properties.headers["sent-at"] = moment.isoformat()
            k += 1
            if bulk:
                channel.basic_publish(
                    "amq.topic", outgoing._encoded_routing_key, outgoing._encoded_body,
                    outgoing._properties)
                continue
            for attempt in range(600):
                try:
                    api.publish(outgoing, timeout=10)
                    break
                except Exception as error:  # the broker is restarting: same id again
                    if attempt == 599:
                        raise
                    print(f"publish failed, retrying: {error}", file=sys.stderr)
                    time.sleep(0.5)
            print(json.dumps({
                "id": outgoing.id,
                "topic": outgoing.topic,
                "sent_at": outgoing._headers["sent-at"],
                "usernames": outgoing.usernames,
                "packages": outgoing.packages,
            }), flush=True)
            if rate > 0:
                time.sleep(1.0 / rate)
if bulk:
    connection.close()
os.unlink(config.name)
