#!/usr/bin/env bash
# Serve a REAL datagrepper (PyPI datagrepper 0.9.7 over datanommer.models 0.9.1, SQLite) filled
# with the fedmsg envelopes of a JSON Lines file. For tests of datagrepper backfill.
#
#   serve.sh CORPUS.jsonl PORT [WORKDIR]
#
# Installs (once, into WORKDIR/venv, or DATAGREPPER_VENV if set, so that tests share one) what
# it needs: libkrb5-dev from Debian, the Python packages from PyPI. Prints "datagrepper ready on
# http://127.0.0.1:PORT" and then serves in the foreground until killed. Note: datanommer gives a
# message without msg_id a random one when storing it.
#
# SQLite's LIKE ignores ASCII case; production datagrepper's PostgreSQL does not. Every SQLite
# connection gets `PRAGMA case_sensitive_like=ON`, so that `contains` compares as in production.
#
# A copy of the tool in /work/shared/tools/datagrepper, kept here so CI does not depend on it;
# changed only by DATAGREPPER_VENV, the lock around the install (concurrent tests) and the
# case-sensitive LIKE.
set -euo pipefail
corpus=$(readlink -f "$1"); port=$2; work=${3:-${TMPDIR:-/tmp}/datagrepper-$port}
here=$(dirname "$(readlink -f "$0")")
mkdir -p "$work"
venv=${DATAGREPPER_VENV:-$work/venv}
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import datagrepper' 2>/dev/null; then
  command -v krb5-config >/dev/null || { apt-get install -y -qq libkrb5-dev >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libkrb5-dev >/dev/null; }; }
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "datagrepper==0.9.7" "datanommer.models==0.9.1" "SQLAlchemy<1.4" \
    "flask<2.1" "werkzeug<2.1" "jinja2<3.1" "itsdangerous<2.1" "markupsafe<2.1"
fi
flock -u 9
mkdir -p "$work/fedmsg.d"
cat > "$work/fedmsg.d/base.py" <<CFG
config = dict(topic_prefix="org.fedoraproject", environment="dev", sign_messages=False,
              validate_signatures=False, endpoints={}, zmq_enabled=False,
              **{"datanommer.sqlalchemy.url": "sqlite:///$work/datanommer.sqlite",
                 "datanommer.enabled": False})
CFG
echo "DATANOMMER_SQLALCHEMY_URL = 'sqlite:///$work/datanommer.sqlite'" > "$work/datagrepper.cfg"
rm -f "$work/datanommer.sqlite"
cd "$work"
"$venv/bin/python" "$here/load.py" "$corpus" "$work/datanommer.sqlite"
DATAGREPPER_CONFIG="$work/datagrepper.cfg" exec "$venv/bin/python" - "$port" <<'PY'
import sys
from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect")
def case_sensitive_like(connection, _record):
    connection.execute("PRAGMA case_sensitive_like=ON")


from datagrepper.app import app
port = int(sys.argv[1])
print(f"datagrepper ready on http://127.0.0.1:{port}", flush=True)
app.run(host="127.0.0.1", port=port)
PY
