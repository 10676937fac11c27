#!/usr/bin/env python3
"""Fills a datanommer database with the real datanommer.models (PyPI), for the bootstrap tests.

usage: datanommer_fill.py POSTGRES_URL FILE

Creates datanommer's tables with its own models (its SQLAlchemy metadata: what `init(...,
create=True)` creates, without the TimescaleDB extension it asks for, which Debian's PostgreSQL
lacks: its `create_hypertable` call is answered by a function that does nothing), then stores
each line of FILE (a fedmsg envelope) as datanommer stores a message:
envelopes without `headers["sent-at"]` through `Message.create` (what datanommer's fedmsg-era
consumer did: agent, certificate, signature... as the envelope gives them), the others through
`datanommer.models.add` with a fedora-messaging message (what datanommer's consumer does now),
whose `sent-at` becomes the timestamp. Envelopes whose `msg_id` and timestamp datanommer already
holds are skipped by datanommer itself (its unique key).

Prints the number of rows in `messages` at the end.
"""
import datetime
import json
import sys

from sqlalchemy import create_engine, func, select, text

import datanommer.models as datanommer
from fedora_messaging import message as fedora_message

url, path = sys.argv[1], sys.argv[2]
engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"), future=True)
datanommer.init(engine=engine)
# datanommer makes `messages` a TimescaleDB hypertable right after creating it; without the
# extension, a function of that name that does nothing lets its own DDL run as written.
with engine.begin() as connection:
    connection.execute(text(
        "CREATE OR REPLACE FUNCTION create_hypertable(relation regclass, time_column name) "
        "RETURNS void LANGUAGE sql AS 'SELECT NULL::void'"
    ))
datanommer.DeclarativeBase.metadata.create_all(engine)

with open(path) as lines:
    for line in lines:
        if not line.strip():
            continue
        envelope = json.loads(line)
        headers = envelope.get("headers") if isinstance(envelope.get("headers"), dict) else None
        if headers and "sent-at" in headers:
            outgoing = fedora_message.Message(
                body=envelope.get("msg") or {}, topic=envelope["topic"], headers=headers
            )
            outgoing.id = envelope["msg_id"]
            outgoing._properties.headers["sent-at"] = headers["sent-at"]
            datanommer.add(outgoing)
            continue
        moment = datetime.datetime.fromtimestamp(envelope["timestamp"], datetime.timezone.utc)
        datanommer.Message.create(
            i=envelope.get("i", 0),
            msg_id=envelope.get("msg_id"),
            topic=envelope["topic"],
            timestamp=moment.replace(tzinfo=None),
            msg=envelope.get("msg") or {},
            headers=headers,
            agent_name=envelope.get("username"),
            certificate=envelope.get("certificate"),
            signature=envelope.get("signature"),
            crypto=envelope.get("crypto"),
            source_name=envelope.get("source_name", "datanommer"),
            source_version=envelope.get("source_version", datanommer.__version__),
            users=[],
            packages=[],
        )
        datanommer.session.commit()

count = datanommer.session.execute(select(func.count()).select_from(datanommer.Message)).scalar()
print(count)
