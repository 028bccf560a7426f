"""``python -m bench.gurux_pure KIND COUNT``: gurux's own AES-GCM decrypt rate, in an interpreter without gxcore.

Importing gxcore.protocols.dlms hands gurux's AES-GCM over to gxcore's `cryptography` path for the
whole process, so gurux's pure-Python cipher can only be timed where gxcore was never
imported. Prints one JSON object ``{"rate": APDUs per second}`` on stdout.
"""

from __future__ import annotations

import json
import sys

from bench.ciphering import APDUS, apdus, gurux_decryptor, gurux_is_handed_over
from bench.timing import Contender, over, race


def main(argv: list[str]) -> int:
    kind, count = argv[0], int(argv[1])
    if any(name == "gxcore" or name.startswith("gxcore.") for name in sys.modules) or gurux_is_handed_over():
        print("gurux's AES-GCM is not its own in this interpreter (gxcore was imported)", file=sys.stderr)
        return 2
    if not 0 < count <= APDUS:
        print(f"COUNT must be 1..{APDUS}", file=sys.stderr)
        return 2
    real_stdout, sys.stdout = sys.stdout, sys.stderr  # gurux prints while it deciphers
    decrypt = gurux_decryptor()
    apdu_set = apdus(kind, APDUS)
    for apdu, plain in zip(apdu_set.apdus[:count], apdu_set.plaintexts[:count], strict=True):
        if decrypt(apdu) != plain:
            print("gurux did not decrypt an APDU to its plaintext", file=sys.stderr)
            return 1
    rates = race([Contender("gurux", over(apdu_set.apdus[:count], 1, decrypt))], repeats=3 if count > 2 else 1)
    print(json.dumps({"rate": rates["gurux"]}), file=real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
