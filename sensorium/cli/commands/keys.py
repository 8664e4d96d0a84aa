"""Manage CURVE keys: the hub's key pair, node key pairs, and which nodes the hub lets in.

Flow: on the hub, 'sensorium keys init-hub /etc/sensorium/keys/hub'; on each node,
'sensorium keys new kitchen-pi /etc/sensorium/keys/node --hub-public hub.key' (copy hub.key there
first); copy the node's kitchen-pi.key back and 'sensorium keys enrol kitchen-pi.key --hub-dir …'.
Unknown keys are refused; 'revoke' removes a node.
"""

from __future__ import annotations

import argparse
import sys

HELP = "generate and enrol CURVE keys"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = sub.add_parser("init-hub", help="create the hub's key pair and its authorized/ folder")
    a.add_argument("dir")
    a = sub.add_parser("new", help="create a node's key pair (with a copy of the hub's public key)")
    a.add_argument("name")
    a.add_argument("dir")
    a.add_argument("--hub-public", required=True, help="the hub's hub.key (public)")
    a = sub.add_parser("enrol", help="authorize a node's public key at the hub")
    a.add_argument("node_public", help="NODE.key file")
    a.add_argument("--hub-dir", required=True, help="the hub's key folder")
    a = sub.add_parser("revoke", help="remove a node's key from the hub")
    a.add_argument("name")
    a.add_argument("--hub-dir", required=True)
    a = sub.add_parser("list", help="list enrolled node keys")
    a.add_argument("--hub-dir", required=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sensorium.pipeline import security

    try:
        if args.action == "init-hub":
            pub = security.init_hub(args.dir)
            print(f"hub key pair in {args.dir}; give {pub} to every node")
        elif args.action == "new":
            pub = security.new_node(args.dir, args.name, args.hub_public)
            print(f"{args.name}: key pair in {args.dir}; enrol {pub} at the hub")
        elif args.action == "enrol":
            dest = security.enrol(args.hub_dir, args.node_public)
            print(f"enrolled {dest.stem}")
        elif args.action == "revoke":
            ok = security.revoke(args.hub_dir, args.name)
            print(
                f"revoked {args.name}: a running hub closes its connections within a second"
                if ok
                else f"{args.name} was not enrolled"
            )
            return 0 if ok else 1
        elif args.action == "list":
            for f in sorted((Path(args.hub_dir) / "authorized").glob("*.key")):
                print(f.stem)
    except (security.KeyError_, OSError) as exc:
        print(f"sensorium keys: {exc}", file=sys.stderr)
        return 2
    return 0
