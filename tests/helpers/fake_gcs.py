"""A ``gs://`` bucket on this machine, for testing URL run folders without a network.

`fake_gcs` points the three clients that touch a ``gs://`` run folder at one local root
directory (``gs://<bucket>/<object>`` is ``<root>/<bucket>/<object>``):

* `etils.epath` (config, results, reports, exports, Orbax's step listing) reaches ``gs://``
  through fsspec's ``gs``/``gcs`` protocol (gcsfs in real use): `FakeGcsFileSystem` is
  registered in its place.
* TensorStore (Orbax's checkpoint arrays) has its own GCS client, which speaks the GCS JSON
  API over HTTP: a local HTTP server answers its object reads and listings, and
  ``TENSORSTORE_GCS_HTTP_URL`` points it there.
* Orbax asks ``google.cloud.storage`` (the ``[gcs]`` extra) whether the bucket has a
  hierarchical namespace before it lists checkpoint steps: a stand-in module says it has
  not (a plain bucket, listed through epath).

Nothing in between is replaced: the code under test, epath, Orbax and TensorStore all see
``gs://bucket/...`` URLs and take their GCS code paths. The HTTP side is read-only
(restoring a checkpoint; no test saves one to a bucket).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import importlib
import json
import os
import sys
import threading
import types
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from etils.epath import backend as epath_backend
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


class FakeGcsFileSystem(DirFileSystem):
    """fsspec's ``gs://`` / ``gcs://`` as a directory: ``gs://b/key`` is ``<root>/b/key``."""

    protocol = ("gs", "gcs")
    root = ""  # set by `fake_gcs`

    def __init__(self, *args, **kwargs) -> None:
        # epath asks for fsspec.filesystem("gcs", finalize_on_close=True) (gcsfs's option).
        super().__init__(path=self.root, fs=LocalFileSystem())


class _Handler(http.server.BaseHTTPRequestHandler):
    """The part of the GCS JSON API that TensorStore reads a checkpoint with."""

    root: Path
    requests: list[str]

    def log_message(self, *args) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.requests.append(self.path)
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.split("/")  # '', 'storage', 'v1', 'b', bucket, 'o'[, object]
        if parts[1:4] != ["storage", "v1", "b"] or len(parts) < 6 or parts[5] != "o":
            return self._reply(404)
        bucket = urllib.parse.unquote(parts[4])
        if len(parts) == 6:
            return self._list(bucket, query)
        name = urllib.parse.unquote("/".join(parts[6:]))
        path = self.root / bucket / name
        if not path.is_file():
            return self._reply(404, b'{"error": {"code": 404}}')
        generation = str(path.stat().st_mtime_ns)
        headers = {"x-goog-generation": generation, "ETag": generation}
        if query.get("ifGenerationNotMatch") == generation:
            return self._reply(304, headers=headers)
        if "ifGenerationMatch" in query and query["ifGenerationMatch"] != generation:
            return self._reply(412)
        data = path.read_bytes()
        if query.get("alt") != "media":
            meta = {"name": name, "bucket": bucket, "generation": generation,
                    "size": str(len(data))}
            return self._reply(200, json.dumps(meta).encode(), headers)
        byte_range = self.headers.get("Range")
        if byte_range and byte_range.startswith("bytes="):
            first, _, last = byte_range[len("bytes="):].partition("-")
            if first:
                start, stop = int(first), (int(last) + 1 if last else len(data))
            else:  # a suffix: the last N bytes
                start, stop = max(len(data) - int(last), 0), len(data)
            stop = min(stop, len(data))
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            return self._reply(206, data[start:stop], headers)
        return self._reply(200, data, headers)

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        base = self.root / bucket
        prefix = query.get("prefix", "")
        start, end = query.get("startOffset", ""), query.get("endOffset")
        items = []
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            name = path.relative_to(base).as_posix()
            if name.startswith(prefix) and name >= start and (end is None or name < end):
                items.append({"name": name, "size": str(path.stat().st_size),
                              "generation": str(path.stat().st_mtime_ns)})
        self._reply(200, json.dumps({"items": items}).encode(),
                    {"Content-Type": "application/json"})

    do_HEAD = do_GET


class _Bucket:
    """What ``google.cloud.storage.Client().get_bucket`` returns: Orbax asks a ``gs://``
    bucket whether it has a hierarchical namespace before listing checkpoint steps."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hierarchical_namespace_enabled = False  # a plain bucket: listed through epath


class _StorageClient:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def get_bucket(self, name: str) -> _Bucket:
        return _Bucket(name)


def _storage_modules() -> dict[str, types.ModuleType]:
    """``google.cloud.storage`` (the ``[gcs]`` extra; not a test dependency) as far as
    Orbax uses it, plus ``google.cloud`` where no package provides that namespace."""
    storage = types.ModuleType("google.cloud.storage")
    storage.Client = _StorageClient
    modules = {"google.cloud.storage": storage}
    try:
        importlib.import_module("google.cloud")
    except ImportError:
        google = sys.modules.get("google") or types.ModuleType("google")
        cloud = types.ModuleType("google.cloud")
        cloud.storage = storage
        google.cloud = cloud
        modules.update({"google": google, "google.cloud": cloud})
    return modules


def _clear_epath_cache() -> None:
    # epath keeps the first fsspec file system it made for a protocol (an lru_cache).
    type(epath_backend.fsspec_backend)._get_filesystem.cache_clear()


@dataclasses.dataclass(frozen=True)
class FakeGcs:
    """`root`: the directory that holds the buckets; `requests`: the paths TensorStore
    asked the fake GCS API for, in order."""

    root: Path
    requests: list[str]


@contextlib.contextmanager
def fake_gcs(root: str | os.PathLike) -> Iterator[FakeGcs]:
    """``gs://<bucket>/<object>`` is ``root/<bucket>/<object>`` inside the context, for
    epath and TensorStore alike (TensorStore reads ``TENSORSTORE_GCS_HTTP_URL`` whenever
    it opens a GCS store, so contexts may follow one another).
    """
    fake = FakeGcs(Path(root), [])
    handler = type("Handler", (_Handler,), {"root": fake.root, "requests": fake.requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    environment = {"TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{server.server_port}",
                   "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token"}
    # fsspec's public registry is read-only; its module's dict is what
    # register_implementation fills (and patch.dict puts back as it was).
    registry = importlib.import_module("fsspec.registry")._registry
    with contextlib.ExitStack() as stack:
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        stack.enter_context(mock.patch.dict(os.environ, environment))
        stack.enter_context(mock.patch.dict(
            registry, dict.fromkeys(FakeGcsFileSystem.protocol, FakeGcsFileSystem)))
        stack.enter_context(mock.patch.object(FakeGcsFileSystem, "root", os.fspath(fake.root)))
        stack.enter_context(mock.patch.dict(sys.modules, _storage_modules()))
        stack.callback(_clear_epath_cache)
        stack.callback(FakeGcsFileSystem.clear_instance_cache)
        _clear_epath_cache()
        FakeGcsFileSystem.clear_instance_cache()
        yield fake
