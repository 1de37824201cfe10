"""A Notation JWS signature envelope, made with jwcrypto and cryptography (PyPI), as an
implementation independent of wharf: the trust tests push what this prints as a referrer
and check that `wharf verify --cert-root` accepts or refuses it.

usage: notation_sign.py KEY.pem DIGEST MEDIA_TYPE SIZE CERT.pem [CERT.pem...]
(certificates leaf first, as Notation's x5c lists them)."""

import base64
import datetime
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from jwcrypto import jwk, jws
from jwcrypto.common import JWSEHeaderParameter, json_encode

SCHEME = "io.cncf.notary.signingScheme"
TIME = "io.cncf.notary.signingTime"


def main():
    key_file, digest, media_type, size, *certs = sys.argv[1:]
    key = jwk.JWK.from_pem(open(key_file, "rb").read())
    chain = []
    for path in certs:
        cert = x509.load_pem_x509_certificate(open(path, "rb").read())
        chain.append(base64.b64encode(cert.public_bytes(Encoding.DER)).decode())
    alg = "ES256" if key.get("crv") == "P-256" else "PS256"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    protected = {
        "alg": alg,
        "cty": "application/vnd.cncf.notary.payload.v1+json",
        "crit": [SCHEME],
        SCHEME: "notary.x509",
        TIME: now,
    }
    payload = {"targetArtifact": {"mediaType": media_type, "digest": digest, "size": int(size)}}
    # jwcrypto refuses critical headers it does not know; these are Notation's.
    registry = {
        SCHEME: JWSEHeaderParameter("Notation signing scheme", False, True, None),
        TIME: JWSEHeaderParameter("Notation signing time", False, True, None),
    }
    envelope = jws.JWS(json_encode(payload).encode(), header_registry=registry)
    envelope.add_signature(
        key,
        None,
        protected=json_encode(protected),
        header=json_encode({"x5c": chain, "io.cncf.notary.signingAgent": "wharf-tests/jwcrypto"}),
    )
    print(envelope.serialize())


main()
