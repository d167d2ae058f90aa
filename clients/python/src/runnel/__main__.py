"""``python -m runnel sub|pub``: quick use from a shell.

Reads RUNNEL_URL (default http://127.0.0.1:8080), RUNNEL_TOKEN, RUNNEL_KEY and RUNNEL_CA, as
the hub's own ``runnel sub`` and ``runnel pub`` do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._errors import RunnelError
from ._events import Reset
from ._sync import Client


def _client(args: argparse.Namespace) -> Client:
    return Client(
        args.url,
        token=args.token or None,
        api_key=args.key or None,
        ca=args.ca or None,
    )


def _sub(args: argparse.Namespace) -> None:
    with (
        _client(args) as client,
        client.subscribe(args.topics, last_event_id=args.last_event_id) as sub,
    ):
        for item in sub:
            if isinstance(item, Reset):
                line: dict[str, Any] = {"reset": item.reason}
            else:
                line = {
                    "id": item.id,
                    "event": item.event,
                    "topics": list(item.topics),
                    "data": item.data,
                }
            print(json.dumps(line, ensure_ascii=False), flush=True)


def _pub(args: argparse.Namespace) -> None:
    data: str | None = args.data
    if data is None:
        data = sys.stdin.read()
    with _client(args) as client:
        if args.json:
            answer = client.publish(args.topic, json.loads(data), event=args.event)
        else:
            answer = client.publish_raw(args.topic, data, event=args.event)
    print(
        json.dumps({"id": answer.id, "topics": list(answer.topics), "delivered": answer.delivered})
    )


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m runnel", description="Talk to a runnel hub.")
    p.add_argument("--url", default=env("RUNNEL_URL", "http://127.0.0.1:8080"))
    p.add_argument("--token", default=env("RUNNEL_TOKEN"), help="a JWT (default: $RUNNEL_TOKEN)")
    p.add_argument("--key", default=env("RUNNEL_KEY"), help="an API key (default: $RUNNEL_KEY)")
    p.add_argument("--ca", default=env("RUNNEL_CA"), help="PEM certificates to trust")
    cmds = p.add_subparsers(dest="command", required=True)
    s = cmds.add_parser("sub", help="print events as JSON lines; resumes by itself")
    s.add_argument("topics", nargs="+")
    s.add_argument("--last-event-id", help="resume after this id (or `earliest`)")
    s.set_defaults(run=_sub)
    u = cmds.add_parser("pub", help="publish DATA (or standard input) to TOPIC")
    u.add_argument("topic")
    u.add_argument("data", nargs="?")
    u.add_argument("--event", help="the event's type")
    u.add_argument("--json", action="store_true", help="DATA is JSON, published as its value")
    u.set_defaults(run=_pub)
    args = p.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        return 130
    except RunnelError as e:
        print(f"runnel: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
