"""The other process of the propagation measurement: a scoring worker's bank refresh and lookup, every 50 ms.

Prints "ready" once its index holds the banks as they are, then the wall-clock time of the first match of the
hash it was given (`python -m bench.harness.hash_watch <512 hex digits>`), and exits. Uses the environment the
benchmark exported (its database, production settings).
"""

import sys
import time

import django


def main() -> int:
    """Watch until the given photo matches a bank entry."""
    django.setup()
    from classifier.perceptual.pdq import PdqHash, split_dihedral
    from moderation.services.bank_index import BankIndex

    variants = tuple(split_dihedral(sys.argv[1]))
    copy = {1: PdqHash(hash=variants[0], quality=100, dihedral=variants)}
    index = BankIndex()
    index.refresh(force=True)
    print("ready", flush=True)
    while True:
        index.refresh()
        if index.lookup(copy):
            print(time.time(), flush=True)
            return 0
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
