"""Verify COSE_Sign1 messages with pycose, an independent COSE library (run in its own venv).

    .venv/pycose/bin/python tests/pycose_verify.py messages.json
    # messages.json: [{"message": hex, "public": hex}, ...]; prints "ok" or "fail <why>" per line

pycose 1.1 needs cbor2 < 6 (cbor2 6 decodes arrays inside tags as tuples), so it lives in
.venv/pycose (`make setup`), apart from the product's own cbor2.
"""

import json
import sys

from pycose.headers import Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import CoseMessage, Sign1Message


def main() -> None:
    for item in json.load(open(sys.argv[1])):
        try:
            message = CoseMessage.decode(bytes.fromhex(item["message"]))
            if not isinstance(message, Sign1Message):
                print("fail not-sign1")
                continue
            message.key = OKPKey(crv=Ed25519, x=bytes.fromhex(item["public"]))
            alg = message.get_attr(Algorithm)
            if message.verify_signature():
                print("ok", getattr(alg, "fullname", alg), message.payload.hex())
            else:
                print("fail signature")
        except Exception as error:  # pycose raises many types; each is a refusal here
            print("fail", type(error).__name__)


if __name__ == "__main__":
    main()
