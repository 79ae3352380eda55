"""The web container's healthcheck: GET /healthz from inside the container, as the site's own host.

Plain http to 127.0.0.1: the TLS proxy is outside; /healthz is exempt from the https redirect
(SECURE_REDIRECT_EXEMPT), and the Host header must be one of ALLOWED_HOSTS or Django answers 400.
Exit 0 when the site answers 200 (ok or degraded), 1 otherwise.
"""

import os
import sys
import urllib.error
import urllib.request

host = os.environ.get("ALLOWED_HOSTS", "localhost").split(",")[0].strip().lstrip(".") or "localhost"
request = urllib.request.Request("http://127.0.0.1:8000/healthz", headers={"Host": host})
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"healthz: {exc}", file=sys.stderr)
    sys.exit(1)
