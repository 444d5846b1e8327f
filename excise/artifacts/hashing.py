"""SHA-256 of files, remembered by what the file system says about them.

Validation hashes every file an artifact lists and every weight file of the base
model, each time something is loaded. Hashing reads the whole file (SmolLM2's
538 MB take about a second; a 7B model in fp16, 13.5 GB, about 25 times as
long), so the result is kept in `EXCISE_HOME/hashes.json`, keyed by the
resolved path, size, inode, mtime and ctime. Any write to a file changes its
mtime and ctime (ctime cannot be set back without root), so a changed file is
always hashed again.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from excise.artifacts.atomic import sha256_file, write_json
from excise.home import excise_home

logger = logging.getLogger(__name__)

CACHE_NAME = "hashes.json"
_lock = threading.Lock()


def _key(path: Path) -> tuple[str, str]:
    stat = path.stat()
    return str(path.resolve()), f"{stat.st_size}:{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def _cache_path() -> Path:
    return excise_home() / CACHE_NAME


def _read_cache() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_sha256(path: Path) -> str:
    """SHA-256 of `path`'s content; hashed again whenever the file changed since it was last hashed."""
    path = Path(path)
    name, stamp = _key(path)
    with _lock:
        entry = _read_cache().get(name)
        if isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    digest = sha256_file(path)
    if _key(path)[1] != stamp:  # written to while we read it: do not remember a hash of a moving target
        return digest
    with _lock:
        cache = _read_cache()
        cache[name] = {"stat": stamp, "sha256": digest}
        try:
            write_json(_cache_path(), cache)
        except OSError as error:  # a read-only home only costs the next start-up a re-hash
            logger.debug("cannot remember the hash of %s: %s", path, error)
    return digest
