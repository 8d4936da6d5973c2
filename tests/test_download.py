"""`zssbir data download` against a loopback HTTP server serving a fabricated QuickDraw-Ext archive."""
import hashlib
import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fabricate_real import QUICKDRAW, quickdraw, zip_folder
from zssbir.cli import main
from zssbir.data.datasets import load_split
from zssbir.data.download import DownloadError, download


class Server:
    """Serves files with Range support; the first ``cut_first`` GETs stop after ``cut_after`` bytes."""

    def __init__(self, files: dict[str, bytes], cut_after: int = 0, cut_first: int = 0):
        self.files, self.cut_after, self.cut_first, self.ranges = files, cut_after, cut_first, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = outer.files.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers["Range"] else 0
                outer.ranges.append(self.headers["Range"])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if outer.cut_first > 0:
                    outer.cut_first -= 1
                    self.wfile.write(body[start:start + outer.cut_after])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


PROXY_VARIABLES = [f"{scheme}_proxy" for scheme in ("http", "https", "all", "ftp")]
LOOPBACK = "127.0.0.1,localhost,::1"


@pytest.fixture(autouse=True)
def loopback_bypasses_proxies(monkeypatch):
    """The loopback server is reached directly, whatever proxy the environment names: no_proxy lists it
    (urllib reads lower- and upper-case variables; an empty lower-case one would hide the upper-case)."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, LOOPBACK)


@pytest.fixture
def archives(tmp_path):
    tree = quickdraw(tmp_path / "src" / "QuickDraw")
    sketches = zip_folder(tree, tmp_path / "QuickDraw_sketches_final.zip", extra=os.urandom(300_000))
    return {sketches.name: sketches.read_bytes()}


def test_interrupted_download_resumes_with_a_range_request(isolated_dirs, archives, monkeypatch):
    server = Server(archives, cut_after=100_000, cut_first=1)
    monkeypatch.setattr("zssbir.data.download.SOURCES",
                        {"quickdraw_ext": ["https://example.org/QuickDraw_sketches_final.zip"]})
    try:
        splits = isolated_dirs / "splits" / "quickdraw_ext"
        splits.mkdir(parents=True)
        (splits / "seen.txt").write_text("\n".join(QUICKDRAW.seen))
        (splits / "unseen.txt").write_text("\n".join(QUICKDRAW.unseen))
        assert main(["data", "download", "quickdraw_ext", "--base-url", server.url, "--quiet",
                     "--splits-dir", str(splits.parent)]) == 0
    finally:
        server.close()
    assert server.ranges[0] is None and server.ranges[1].startswith("bytes=")
    assert 0 < int(server.ranges[1].split("=")[1].rstrip("-")) <= 100_000
    got = isolated_dirs / "data" / "downloads" / "QuickDraw_sketches_final.zip"
    want = hashlib.sha256(archives[got.name]).hexdigest()
    manifest = json.loads((got.parent / "manifest.json").read_text())
    assert manifest[got.name]["sha256"] == want == hashlib.sha256(got.read_bytes()).hexdigest()
    assert manifest[got.name]["size"] == len(archives[got.name]) and manifest[got.name]["url"].startswith(server.url)
    assert not got.with_name(got.name + ".part").exists()
    assert len(load_split("quickdraw_ext", "zero", "sketch")) == 10  # downloaded, unpacked and prepared


def test_changed_file_and_unreachable_source(isolated_dirs, archives):
    server = Server(archives)
    try:
        url = f"{server.url}/QuickDraw_sketches_final.zip"
        [got] = download("quickdraw_ext", urls=[url], progress=False)
        assert download("quickdraw_ext", urls=[url], progress=False) == [got]  # checked, not fetched again
        assert len(server.ranges) == 1
        got.write_bytes(b"tampered")
        with pytest.raises(DownloadError, match="has changed since it was first downloaded"):
            download("quickdraw_ext", urls=[url], progress=False)
        with pytest.raises(DownloadError, match="cannot download .*nothere.zip"):
            download("quickdraw_ext", urls=[f"{server.url}/nothere.zip"], progress=False)
    finally:
        server.close()


def test_loopback_download_ignores_a_proxy_named_by_the_environment(isolated_dirs, archives, monkeypatch):
    """A proxy that refuses every connection (port 9 of the loopback) is set under every spelling;
    the download still reaches the loopback server, directly."""
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, "http://127.0.0.1:9")
        monkeypatch.setenv(name.upper(), "http://127.0.0.1:9")
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's cached opener read the proxies of its time
    server = Server(archives)
    try:
        [got] = download("quickdraw_ext", urls=[f"{server.url}/QuickDraw_sketches_final.zip"], progress=False)
    finally:
        server.close()
    assert got.read_bytes() == archives[got.name] and server.ranges == [None]
