"""Schemathesis hooks: the client it plays follows the Idempotency-Key contract.

A key names one create and is sent again only to retry that create. Schemathesis draws keys from
the header's schema and so sends the same short key with different texts (the API answers 422,
as it should) and sends a key again after the item it created was deleted (the API answers with
that item again, as it should). Neither is a failure of the API, so every valid key it draws is
replaced by a fresh UUID; invalid keys go out as drawn, and the API must refuse them with a 400.
Replays and reuse are tested on their own, in api/tests/api/idempotency.rs.
"""

from __future__ import annotations

import re
import uuid

import schemathesis

# The header's pattern in the OpenAPI document: 1 to 255 visible ASCII characters but `"`,
# optionally in double quotes.
VALID_KEY = re.compile(r'^(?:[!#-~]{1,255}|"[!#-~]{1,255}")$')


@schemathesis.hook
def before_call(ctx, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        value = headers[name]
        if name.lower() == "idempotency-key" and isinstance(value, str) and VALID_KEY.match(value):
            headers[name] = str(uuid.uuid4())
