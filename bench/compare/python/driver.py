"""The comparison's segment-analytics-python driver.

Reads the generated NDJSON, calls identify for each customer with the traits
the segment-sync CLI's default mapping makes, then flush and shutdown.
Library defaults apart from the host. Usage: python driver.py PATH
(SEGMENT_HOST, SEGMENT_WRITE_KEY).
"""
import json
import os
import sys

import segment.analytics as analytics

errors = 0
dropped = 0


def on_error(error, items):
    global errors
    errors += len(items)


analytics.write_key = os.environ.get("SEGMENT_WRITE_KEY", "compare")
analytics.host = os.environ["SEGMENT_HOST"]
analytics.on_error = on_error

with open(sys.argv[1], encoding="utf-8") as lines:
    for line in lines:
        c = json.loads(line)
        # False when the library's queue is full and the event is dropped.
        queued, _ = analytics.identify(
            c["customer_id"],
            {
                "address": {
                    "city": c["city"],
                    "country": c["country"],
                    "postalCode": c["postal_code"],
                },
                "company": {"name": c["company_name"]},
                "createdAt": c["created_at"],
                "email": c["email"],
                "firstName": c["first_name"],
                "lastName": c["last_name"],
                "lifetime_value": c["lifetime_value"],
                "phone": c["phone"],
                "plan": c["plan"],
            },
        )
        dropped += not queued
analytics.flush()
analytics.shutdown()
print(f"dropped {dropped} (queue full), failed {errors}")
