"""Secret redaction (locked): the second line of defence after the sandbox. Any known secret
value is replaced by `***` in text that leaves a run (the log tail in a record, the ledger, an
LLM fix prompt)."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
MIN_SECRET_LEN = 4   # shorter values would mask ordinary words and digits all over a log
_SECRET_NAME = re.compile(r"(_API_KEY|_TOKEN|_SECRET|_SECRET_KEY|_PASSWORD)$|^(REDIS_PASSWORD|REDISCLI_AUTH)$")
REDIS_URL_VARS = ("SWARM_REDIS_URL", "REDIS_URL")


def url_password(url: str | None) -> str | None:
    """The password inside a URL such as redis://user:pw@host:6379/0 (None if there is none)."""
    if not url or "@" not in url:
        return None
    try:
        pw = urlsplit(url).password
    except ValueError:
        return None
    return pw or None


def known_secrets(env: Mapping[str, str] | None = None, names: Iterable[str] = ()) -> list[str]:
    """The secret values this process knows: env vars named *_API_KEY, *_TOKEN (and *_SECRET,
    *_PASSWORD, REDIS_PASSWORD), the ones in `names` (e.g. a backend's api_key_env from the
    config), and the password inside SWARM_REDIS_URL / REDIS_URL."""
    env = os.environ if env is None else env
    found: set[str] = set()
    wanted = set(names)
    for k, v in env.items():
        if v and (k in wanted or _SECRET_NAME.search(k.upper())):
            found.add(v)
    for k in REDIS_URL_VARS:
        pw = url_password(env.get(k))
        if pw:
            found.update({pw, unquote(pw)})
    return sorted((s for s in found if len(s) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every secret value (and its URL-encoded forms) replaced by `***`.
    `secrets` defaults to known_secrets()."""
    if not text:
        return text
    forms: set[str] = set()
    for s in known_secrets() if secrets is None else secrets:
        if not s or len(s) < MIN_SECRET_LEN:
            continue
        forms.update({s, quote(s, safe=""), quote_plus(s), quote(s)})
    for f in sorted(forms, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(f, MASK)
    return text
