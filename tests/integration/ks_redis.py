#!/usr/bin/python3
"""What an attacker who can write to Redis tries against keystore distribution
(SPEC §11), for tests/integration/cluster_keystore.sh. Full-access Redis user
(REDIS_PASSWORD in the environment), keys under PREFIX (kms:cache:v1:).

    ks_redis.py PORT modify          head G: G's blob with its header claiming G+1, as head G+1
    ks_redis.py PORT replay OLD      generation OLD's blob, stored as head+1
    ks_redis.py PORT rollback OLD    the head set back to OLD (an older, genuine generation)
    ks_redis.py PORT head            prints the head

Each write is announced on the events channel as kmsctl does. Prints the new head.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis_scan import Resp  # noqa: E402

PREFIX = b"kms:cache:v1:"


def main():
    port, op = int(sys.argv[1]), sys.argv[2]
    r = Resp(port)
    r.cmd("AUTH", os.environ["REDIS_PASSWORD"])
    head = int(r.cmd("GET", PREFIX + b"ks:head") or b"0")
    if op == "head":
        print(head)
        return 0
    if op == "modify":
        # why: to pass the node's generation check the header must name G+1; the
        # header is the AEAD's associated data, so the tag no longer fits
        blob = bytearray(r.cmd("GET", PREFIX + b"ks:g:%d" % head))
        new = head + 1
        struct.pack_into(">Q", blob, 7 + blob[6], new)
    elif op == "replay":
        old = int(sys.argv[3])
        blob = r.cmd("GET", PREFIX + b"ks:g:%d" % old)
        if blob is None:
            print("no generation %d" % old, file=sys.stderr)
            return 2
        new = head + 1
    elif op == "rollback":
        new = int(sys.argv[3])
        r.cmd("SET", PREFIX + b"ks:head", str(new))
        r.cmd("PUBLISH", PREFIX + b"ks:events", str(new))
        print(new)
        return 0
    else:
        print(__doc__, file=sys.stderr)
        return 2
    r.cmd("SET", PREFIX + b"ks:g:%d" % new, bytes(blob))
    r.cmd("SET", PREFIX + b"ks:head", str(new))
    r.cmd("SET", PREFIX + b"ks:seq", str(new))
    r.cmd("PUBLISH", PREFIX + b"ks:events", str(new))
    print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
