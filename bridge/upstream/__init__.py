"""pingjia.bridge.upstream: the outbox's way to the provincial 好差评 platform.

- mapping:  profile (TOML) -> the province's record fields, and back (receiver)
- signing:  request signatures (HMAC-SHA256, HMAC-SM3)
- sender:   the outbox worker (batches, retries, circuit, quarantine, re-push)
- receiver: the reference upstream receiver (validates, stores, fails on demand)

`status(db)` and `validate(cfg)` are the two calls the core makes (status page,
config loader); see docs/UPSTREAM.md.
"""
from .sender import status, validate, repush, Sender  # noqa: F401
