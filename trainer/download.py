"""HTTP shard fetch: streamed, retries with exponential backoff, Range-resume of a .part, atomic rename."""
from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

import tenacity

from trainer.errors import DownloadError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class _Transient(Exception):
    """One attempt failed in a way a later one may not (5xx, reset, short read)."""


def download(url: str, dest: str | Path, *, retries: int = 5, backoff: float = 1.0,
             timeout: float = 30.0) -> Path:
    """Fetch url to dest unless dest exists. A partial `<dest>.part` is resumed with a Range
    request; dest appears only complete (os.replace). Raises DownloadError after retries;
    a 404 (or other 4xx) fails at once, since retrying cannot help."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    def say(state: tenacity.RetryCallState) -> None:
        log.warning("download %s failed (attempt %d/%d): %s", url, state.attempt_number,
                    retries + 1, state.outcome.exception())

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=tenacity.wait_exponential(multiplier=backoff),   # backoff, 2x, 4x, ...
        retry=tenacity.retry_if_exception_type(_Transient), before_sleep=say, reraise=True)
    try:
        return retrying(_fetch, url, dest, timeout)
    except _Transient as e:
        raise DownloadError(f"{url}: failed after {retries + 1} attempts ({e})") from None


def _fetch(url: str, dest: Path, timeout: float) -> Path:
    """One attempt. Raises _Transient (retry) or DownloadError (give up)."""
    part = dest.with_name(dest.name + ".part")
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
        raise _Transient(f"HTTP {e.code}") from None
    except (OSError, ConnectionError, urllib.error.URLError) as e:
        raise _Transient(f"{type(e).__name__}: {e}") from None

