"""A GCS API server on this machine (PyPI gcp-storage-emulator), for the tests and `mbt bench gcs`.

    with gcs_emulator("mbt-test", log_path) as bucket:   # "gs://mbt-test"
        ...

Starts the emulator on a free localhost port with one bucket, in memory, and points every client of
the project at it for the duration: STORAGE_EMULATOR_HOST (google-cloud-storage, Beam's FileSystems,
gcsfs, and through it orbax's file operations) and TENSORSTORE_GCS_HTTP_URL (orbax's arrays), set in
this process and inherited by the processes it starts.

The emulator (2026.7.19) lacks one part of the GCS API that the project's clients rely on: object
generations. Its downloads carry no `x-goog-generation` header and it ignores the `ifGenerationMatch`
/ `ifGenerationNotMatch` preconditions, while tensorstore (orbax's OCDBT checkpoints) updates its
manifest by read-compare-write on generations, and a split's lock is created with
`ifGenerationMatch=0` (create only if absent). `python -m tools.gcs_emulator start ...` runs the same
emulator with that part added as GCS documents it
(https://cloud.google.com/storage/docs/request-preconditions): downloads and metadata reads send the
object's generation headers, answer 412 when `ifGenerationMatch` differs and 304 when
`ifGenerationNotMatch` equals; media and multipart uploads answer 412, writing nothing, when
`ifGenerationMatch` differs from the object's generation (0: the object must not exist). The server
handles one request at a time, so the check and the write are atomic. Its listen queue is raised
from http.server's 5 to 128: with 5, the training input's concurrent range reads of a sample's
frames (8 at once) were refused and retried by gcsfs after a second each.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import threading
import urllib.request
from http import HTTPStatus
from typing import Iterator

ENDPOINT_VARIABLES = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_CLOUD_PROJECT")


@contextlib.contextmanager
def gcs_emulator(bucket: str, log_path: str, start_timeout: float = 30.0) -> Iterator[str]:
    """Run the emulator with `bucket` (GCS naming rules: 3-63 characters); yields "gs://BUCKET"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(log_path, "w")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "tools.gcs_emulator", "start", "--host=127.0.0.1",
                             f"--port={port}", "--in-memory", f"--default-bucket={bucket}"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=root)
    host = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ENDPOINT_VARIABLES}
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                urllib.request.urlopen(f"{host}/storage/v1/b/{bucket}", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the GCS emulator did not start (see {log_path})") from None
                time.sleep(0.1)
        os.environ["STORAGE_EMULATOR_HOST"] = host
        os.environ["TENSORSTORE_GCS_HTTP_URL"] = host
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "mbt-test")
        yield f"gs://{bucket}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


# ----------------------------------------------------------------- generations and preconditions

_current = threading.local()


def _precondition(query: dict, generation: int, reading: bool) -> HTTPStatus | None:
    """The status a request's generation preconditions give against the object's generation (0:
    absent), or None when they hold."""
    match, not_match = query.get("ifGenerationMatch"), query.get("ifGenerationNotMatch")
    if match and int(match[0]) != generation:
        return HTTPStatus.PRECONDITION_FAILED
    if not_match and int(not_match[0]) == generation:
        return HTTPStatus.NOT_MODIFIED if reading else HTTPStatus.PRECONDITION_FAILED
    return None


def _add_generations() -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.storage import Storage

    def generation_of(storage, bucket: str, name: str) -> dict | None:
        try:
            return storage.get_file_obj(bucket, name)
        except NotFound:
            return None

    def refuse(response, status: HTTPStatus) -> None:
        response.status = status
        response._headers.clear()
        if status is HTTPStatus.PRECONDITION_FAILED:
            response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you "
                                                             "specified did not hold."}})
        else:
            response._content = b""

    def reading(handler):
        def wrapped(request, response, storage, *args, **kwargs):
            obj = generation_of(storage, request.params.get("bucket_name"), request.params.get("object_id"))
            if obj is not None:
                status = _precondition(request.query, int(obj.get("generation") or 0), reading=True)
                if status is not None:
                    return refuse(response, status)
            handler(request, response, storage, *args, **kwargs)
            if obj is not None and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
                response["x-goog-generation"] = str(obj.get("generation") or 0)
                response["x-goog-metageneration"] = str(obj.get("metageneration") or 1)
        return wrapped

    def writing(handler):
        def wrapped(request, response, storage, *args, **kwargs):
            _current.query, _current.refused = request.query, None
            try:
                handler(request, response, storage, *args, **kwargs)
            finally:
                _current.query = None
            if _current.refused is not None:
                refuse(response, _current.refused)
        return wrapped

    create_file = Storage.create_file

    def guarded_create_file(self, bucket_name, file_name, content, file_obj, file_id=None):
        query = getattr(_current, "query", None)
        if query:
            obj = generation_of(self, bucket_name, file_name)
            status = _precondition(query, int(obj.get("generation") or 0) if obj else 0, reading=False)
            if status is not None:
                _current.refused = status
                return None
        return create_file(self, bucket_name, file_name, content, file_obj, file_id)

    Storage.create_file = guarded_create_file
    wrap = {objects.download: reading(objects.download), objects.get: reading(objects.get),
            objects.insert: writing(objects.insert), objects.xml_upload: writing(objects.xml_upload)}
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrap:
                handlers[method] = wrap[handler]
    objects.insert = wrap[objects.insert]  # (the router's fallback for uploads without /upload)


if __name__ == "__main__":
    import http.server

    http.server.HTTPServer.request_queue_size = 128
    _add_generations()
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])
