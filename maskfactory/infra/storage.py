"""URIs on local disk (``/path``, ``file://``) and S3 (``s3://``) through fsspec, configured from settings.

Two libraries talk to storage: fsspec/s3fs (images, checkpoints, manifests) and delta-rs (tables).
They name the same S3 options differently, so both spellings are built here from one ``Settings``.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Any
from urllib.parse import urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

from maskfactory.infra.settings import Settings, get_settings


def scheme(uri: str) -> str:
    """``'s3'`` for S3 URIs, ``'file'`` for local paths and ``file://`` URIs, else the URI's scheme."""
    parsed = urlparse(str(uri))
    # A Windows drive letter or a bare path parses with an empty or one-letter scheme.
    return "file" if len(parsed.scheme) <= 1 else parsed.scheme


def is_s3(uri: str) -> bool:
    return scheme(uri) in ("s3", "s3a")


def normalize(uri: str | os.PathLike[str]) -> str:
    """Canonical form: absolute local paths (no ``file://``), ``s3://bucket/key`` without a trailing slash."""
    uri = str(uri)
    if scheme(uri) == "file":
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        return os.path.abspath(os.path.expanduser(path))
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://") :]
    return uri.rstrip("/")


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/`` (also for local paths, which are POSIX here)."""
    out = normalize(base)
    for part in parts:
        out = out.rstrip("/") + "/" + str(part).strip("/")
    return out


def fsspec_options(uri: str, settings: Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for ``fsspec.filesystem``/``fsspec.open`` on this URI."""
    if not is_s3(uri):
        return {}
    s = settings or get_settings()
    opts: dict[str, Any] = {
        # Listings are cached per filesystem instance; several processes write the same prefixes,
        # so a cached listing would hide their files. Ask S3 every time.
        "use_listings_cache": False,
        "client_kwargs": {"region_name": s.aws_region},
    }
    if s.s3_endpoint_url:
        opts["endpoint_url"] = s.s3_endpoint_url
    if s.aws_access_key_id:
        opts["key"] = s.aws_access_key_id
        opts["secret"] = s.aws_secret_access_key
    if s.aws_session_token:
        opts["token"] = s.aws_session_token
    return opts


def delta_options(uri: str, settings: Settings | None = None) -> dict[str, str]:
    """``storage_options`` for delta-rs (object_store's keys) on this URI."""
    if not is_s3(uri):
        return {}
    s = settings or get_settings()
    opts = {
        "AWS_REGION": s.aws_region,
        # Commits are made safe by S3's conditional writes (If-None-Match on the log entry); delta-rs
        # turns them on by default for S3 and we say so explicitly so a changed default cannot undo it.
        "conditional_put": "etag",
    }
    if s.s3_endpoint_url:
        opts["AWS_ENDPOINT_URL"] = s.s3_endpoint_url
        if s.s3_endpoint_url.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    if s.aws_access_key_id:
        opts["AWS_ACCESS_KEY_ID"] = s.aws_access_key_id
        opts["AWS_SECRET_ACCESS_KEY"] = s.aws_secret_access_key or ""
    if s.aws_session_token:
        opts["AWS_SESSION_TOKEN"] = s.aws_session_token
    return opts


def filesystem(uri: str, settings: Settings | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URI and the path inside it."""
    uri = normalize(uri)
    if scheme(uri) == "file":
        return LocalFileSystem(), uri
    fs, path = fsspec.core.url_to_fs(uri, **fsspec_options(uri, settings))
    return fs, path


def open_uri(uri: str, mode: str = "rb", settings: Settings | None = None) -> IO[Any]:
    """Open a URI for reading or writing; parent folders are created for local writes."""
    fs, path = filesystem(uri, settings)
    if "w" in mode and isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return fs.open(path, mode)


def read_bytes(uri: str, settings: Settings | None = None) -> bytes:
    fs, path = filesystem(uri, settings)
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes, settings: Settings | None = None) -> None:
    """Write a whole object. On S3 a PUT is atomic; locally we write a temp file and rename it,
    so a reader never sees half a file."""
    fs, path = filesystem(uri, settings)
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")  # same folder: the rename stays atomic
    os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; tables and checkpoints are read by other users
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def exists(uri: str, settings: Settings | None = None) -> bool:
    fs, path = filesystem(uri, settings)
    return fs.exists(path)
