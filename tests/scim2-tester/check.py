"""Runs scim2-tester (python-scim's independent SCIM 2.0 checker) against a live server.

Usage: check.py BASE_URL AUTHORIZATION_HEADER

Prints one line per check, then a final line of JSON: {"results": [{"status", "title", ...}]}.
The Rust test tests/tests/scim2_tester.rs starts the stack, runs this, and asserts on that JSON.
"""

import json
import os
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server


def main() -> int:
    base_url, authorization = sys.argv[1], sys.argv[2]
    hooks = {}
    if os.environ.get("SCIM2_TESTER_TRACE"):
        # Every request and response on stderr, to see what a failing check exchanged.
        def show_request(request):
            print(f">> {request.method} {request.url} {request.content.decode(errors='replace')}", file=sys.stderr)

        def show_response(response):
            response.read()
            print(f"<< {response.status_code} {response.text}", file=sys.stderr)

        hooks = {"request": [show_request], "response": [show_response]}
    http = Client(base_url=base_url, headers={"Authorization": authorization}, timeout=30, event_hooks=hooks)
    client = SyncSCIMClient(http)
    results = check_server(client)
    out = []
    for r in results:
        status = r.status.name if hasattr(r.status, "name") else str(r.status)
        resource = getattr(r, "resource_type", None)
        print(f"[{status}] {resource or '-'} {r.title}: {r.reason or ''}", file=sys.stderr)
        out.append({"status": status, "title": r.title, "resource": resource, "reason": str(r.reason or "")})
    print(json.dumps({"results": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
