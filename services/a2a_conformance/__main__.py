"""``python -m services.a2a_conformance [GRPC_ADDRESS [CARD_ADDRESS]]``: serve the A2A
conformance agent (defaults 127.0.0.1:9998 and its card at http://127.0.0.1:9999)."""

import sys

from mesh import A2AOptions, serve
from services.a2a_conformance.agent import build

if __name__ == "__main__":
    grpc_address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9998"
    card_address = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:9999"
    serve(build(), grpc_address, a2a=A2AOptions(http_address=card_address))
