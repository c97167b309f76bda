"""Where weights come from: a local file, or a URL downloaded once into the cache.

A URL may carry its expected SHA-256 as a fragment, ``https://host/model.safetensors#sha256=HEX``:
the download is checked against it and refused on mismatch, and a cached copy is used only if it
still has that hash. Downloads go to a hidden temporary file beside their final name and are
renamed into place when complete and verified (`lipt_core.files.replacing`), so the cache never
holds a partial file.

Schemes: ``https://``; plain ``http://`` only for a loopback host (127.0.0.1, ::1, localhost),
which is what tests and local mirrors use; a remote ``http://`` URL is refused, since nothing
would protect the download in transit. ``file://`` URLs are not accepted: pass the path.

The cache lives in ``platformdirs.user_cache_dir("lipt")/weights`` unless ``LIPT_CACHE_DIR``
names another folder.

Trained weights ship inside the package (`lipt_core.pretrained`); `default_weights` picks the
one for a task, checks its hash and returns its path, and says clearly when there is none, so
the CLI asks for ``--weights`` instead of ever running random weights as if they were trained.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lipt_core.errors import CheckpointError, UsageError
from lipt_core.files import replacing

Progress = Callable[[int, int | None], None]

CACHE_ENV = "LIPT_CACHE_DIR"
TIMEOUT_S = 60.0
CHUNK = 1 << 20
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_PIN = re.compile(r"sha256=([0-9a-fA-F]{64})")


def default_weights(task: str, model: str, *, scale: int | None = None, colors: int = 3) -> Path:
    """The bundled trained weights for ``task`` with preset ``model`` (SR: x``scale``, default
    x4) for ``colors`` channels, verified against the registry's SHA-256.

    Raises UsageError (exit 2) when none ship: never fall back to random weights.
    """
    from lipt_core.pretrained import find_entry, verified_path

    return verified_path(find_entry(task, model, scale=scale, colors=colors))


def is_url(spec: str | os.PathLike) -> bool:
    return isinstance(spec, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec) is not None


def parse_url(spec: str) -> tuple[str, str | None]:
    """(URL without fragment, pinned sha256 in lower case or None); checks the scheme."""
    parts = urllib.parse.urlsplit(spec)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme == "http" and host not in _LOOPBACK:
        raise UsageError(
            f"{spec}: refusing plain http:// for a remote host; use https:// "
            "(http:// is accepted for 127.0.0.1 and localhost only)"
        )
    if scheme not in ("http", "https"):
        raise UsageError(f"{spec}: unsupported URL scheme {parts.scheme!r}; use https://")
    if not host:
        raise UsageError(f"{spec}: no host in the URL")
    pin = None
    if parts.fragment:
        match = _PIN.fullmatch(parts.fragment.strip())
        if not match:
            raise UsageError(
                f"{spec}: the URL fragment must be #sha256=<64 hex digits>, got #{parts.fragment}"
            )
        pin = match[1].lower()
    return urllib.parse.urlunsplit(parts._replace(fragment="")), pin


def default_cache_dir() -> Path:
    """The folder downloads are cached in."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("lipt")) / "weights"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(
    spec: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Path:
    """The local file for ``spec``: a path as is, a URL downloaded into the cache."""
    if isinstance(spec, os.PathLike) or not is_url(str(spec)):
        path = Path(spec)
        if not path.exists():  # a wrong option value: a usage error, not a damaged file
            raise UsageError(f"{path}: no such weights file")
        return path
    return download(str(spec), cache_dir=cache_dir, progress=progress)


def cached_path(url: str, pin: str | None, folder: Path) -> Path:
    """Where ``url`` is cached: by its pin when it has one, else by the URL itself."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "weights"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100].lstrip(".") or "weights"
    key = pin[:16] if pin else "url-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    return folder / f"{key}-{name}"


def download(
    spec: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download ``spec`` (``URL[#sha256=HEX]``) into the cache, once; return the cached file.

    A cached file is reused when its hash matches the pin (or, unpinned, when it exists).
    ``progress(done_bytes, total_bytes_or_None)`` is called as the download proceeds.

    Raises:
        UsageError: a malformed URL or an unsupported scheme.
        CheckpointError: the download fails, or its SHA-256 is not the pinned one.
    """
    url, pin = parse_url(spec)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cached_path(url, pin, folder)
    if target.is_file():
        if pin is None or sha256_of(target) == pin:
            return target
        target.unlink(missing_ok=True)  # damaged or replaced: fetch again
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot create the cache folder {folder}: {error}") from None
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "lipt"})
        with (
            replacing(target) as temp,
            urllib.request.urlopen(request, timeout=TIMEOUT_S) as response,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            if progress:
                progress(0, total)
            with open(temp, "wb") as handle:
                while block := response.read(CHUNK):
                    handle.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
            if total is not None and done != total:
                raise CheckpointError(f"{url}: download incomplete ({done} of {total} bytes)")
            actual = digest.hexdigest()
            if pin is not None and actual != pin:
                raise CheckpointError(
                    f"{url}: SHA-256 mismatch: expected {pin}, got {actual}; the file was not kept"
                )
    except urllib.error.HTTPError as error:
        raise CheckpointError(
            f"{url}: download failed (HTTP {error.code} {error.reason})"
        ) from None
    except urllib.error.URLError as error:
        raise CheckpointError(f"{url}: download failed ({error.reason})") from None
    except (TimeoutError, ConnectionError) as error:
        raise CheckpointError(f"{url}: download failed ({error})") from None
    except OSError as error:
        raise CheckpointError(f"{url}: cannot save the download ({error})") from None
    return target


__all__ = [
    "CACHE_ENV",
    "cached_path",
    "default_cache_dir",
    "default_weights",
    "download",
    "is_url",
    "parse_url",
    "resolve_weights",
    "sha256_of",
]
