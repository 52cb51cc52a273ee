"""HTTP shard fetch: streamed, retries with exponential backoff, Range-resume of a .part, atomic rename."""
from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from trainer.errors import DownloadError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def download(url: str, dest: str | Path, *, retries: int = 5, backoff: float = 1.0,
             timeout: float = 30.0) -> Path:
    """Fetch url to dest unless dest exists. A partial `<dest>.part` is resumed with a Range
    request; dest appears only complete (os.replace). Raises DownloadError after retries;
    a 404 (or other 4xx) fails at once, since retrying cannot help."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "autoresearch-swarm"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                if have and resp.status != 206:
                    have = 0  # server ignored the Range: start over
                mode = "ab" if have else "wb"
                got = 0
                with open(part, mode) as f:
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        got += len(chunk)
                if total is not None and got < int(total):
                    raise ConnectionError(f"short read {got}/{total} bytes")
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the .part is already complete
                os.replace(part, dest)
                return dest
            if 400 <= e.code < 500:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            last = f"HTTP {e.code}"
        except (OSError, ConnectionError, urllib.error.URLError) as e:
            last = f"{type(e).__name__}: {e}"
        log.warning("download %s failed (attempt %d/%d): %s", url, attempt + 1, retries + 1, last)
    raise DownloadError(f"{url}: failed after {retries + 1} attempts ({last})")


def reachable(url: str, timeout: float = 2.0) -> bool:
    """A quick HEAD: can the hub be reached at all?"""
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except Exception:
        return False
