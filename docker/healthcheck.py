"""Container health check: exit 0 when the server at URL answers (any HTTP status below 500).

Usage: python healthcheck.py [URL]   (default: JupyterLab's http://127.0.0.1:8888/api)
Python instead of curl because debian:bookworm-slim has no curl.
"""

import sys
import urllib.error
import urllib.request


def main(url: str = "http://127.0.0.1:8888/api") -> int:
    """Return 0 when `url` answers with a status below 500, else 1 (with the reason printed)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as error:  # answered, e.g. 403 without a token: alive
        status = error.code
    except OSError as error:  # refused, timed out, DNS...
        print(f"unhealthy: {url}: {error}")
        return 1
    print(f"{url}: HTTP {status}")
    return 0 if status < 500 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
