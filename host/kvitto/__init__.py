"""kvitto: open, verifiable evidence of home-care visits.

from kvitto.evidence.events import verify_event
payload = verify_event(message_bytes, public_key)
print(payload.device, payload.seq, payload.type)
"""

__version__ = "0.1.0"
