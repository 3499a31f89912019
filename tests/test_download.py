"""Download sources against a local threaded HTTP server on 127.0.0.1 (no other address is contacted)."""
from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from caisp import CaispError
from caisp.data.download import (DownloadError, _read_tag, copy_folder, download_files, download_fivek,
                                 file_manifest, read_url_list, write_manifest)

FIVEK_LIST = Path(__file__).resolve().parents[1].parent / "shared" / "fivek" / "NIKON_D700.txt"
FAST = dict(workers=4, retries=3, backoff=0.001, timeout=5.0, progress=False)


class Server:
    """What the handler serves and how it misbehaves; every request is logged as (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()  # send half the body, then drop the connection (once)
        self.statuses: dict[str, list[int]] = {}  # error codes to answer first, in order
        self.ignore_range: set[str] = set()
        self.ignore_if_range: set[str] = set()  # honours Range whatever If-Range says (a broken server)
        self.trickle: dict[str, float] = {}  # seconds between bytes after the first half of the body
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        # validators sent with every file (a strong ETag from its content, and Last-Modified) unless
        # listed here; If-Range that matches neither gets the whole file (200), as RFC 9110 says
        self.no_etag: set[str] = set()
        self.weak_etag: set[str] = set()
        self.no_last_modified: set[str] = set()
        self.mtime: dict[str, float] = {}
        self.if_range_log: list[tuple[str, str | None]] = []
        self.delay = 0.0  # seconds each request takes, to observe parallel transfers
        self.active = self.max_active = 0
        self.log: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.url = ""

    def add(self, name: str, size: int) -> bytes:
        data = os.urandom(size)
        self.files["/" + name] = data
        return data

    def requests(self, name: str) -> list[str | None]:
        return [rng for path, rng in self.log if path == "/" + name]

    def if_ranges(self, name: str) -> list[str | None]:
        return [v for path, v in self.if_range_log if path == "/" + name]

    def etag(self, name: str) -> str | None:
        path = "/" + name
        if path in self.no_etag:
            return None
        tag = f'"{hashlib.sha256(self.files[path]).hexdigest()[:16]}"'
        return "W/" + tag if path in self.weak_etag else tag

    def last_modified(self, name: str) -> str | None:
        path = "/" + name
        if path in self.no_last_modified:
            return None
        return email.utils.formatdate(self.mtime.get(path, 1_600_000_000), usegmt=True)


class Handler(BaseHTTPRequestHandler):
    state: Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        s, path, rng = self.state, self.path, self.headers.get("Range")
        with s.lock:
            s.log.append((path, rng))
            s.if_range_log.append((path, self.headers.get("If-Range")))
            code = s.statuses[path].pop(0) if s.statuses.get(path) else None
            cut = path in s.cut_once
            s.cut_once.discard(path)
            s.active += 1
            s.max_active = max(s.max_active, s.active)
        try:
            time.sleep(s.delay)
            self.respond(s, path, rng, code, cut)
        finally:
            with s.lock:
                s.active -= 1

    def respond(self, s: Server, path: str, rng: str | None, code: int | None, cut: bool) -> None:
        assert self.headers.get("User-Agent", "").startswith("caisp/")
        if path in s.redirects:
            self.send_response(302)
            self.send_header("Location", s.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if code is None and path not in s.files:
            code = 404
        if code is not None:
            self.send_error(code)
            return
        data, start = s.files[path], 0
        etag, modified = s.etag(path[1:]), s.last_modified(path[1:])
        if_range = self.headers.get("If-Range")
        strong = etag if etag and not etag.startswith("W/") else None
        unchanged = if_range is None or if_range in (strong, modified) or path in s.ignore_if_range
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and path not in s.ignore_range and unchanged:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        for header, value in (("ETag", etag), ("Last-Modified", modified)):
            if value:
                self.send_header(header, value)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in s.trickle:
            self.wfile.write(body[: len(body) // 2])
            for i in range(len(body) // 2, len(body)):
                self.wfile.flush()
                time.sleep(s.trickle[path])
                try:
                    self.wfile.write(body[i:i + 1])
                except OSError:  # the client gave up
                    return
        else:
            self.wfile.write(body[: len(body) // 2] if cut else body)
        self.close_connection = True  # HTTP/1.0: the server closes the socket, a cut body ends early


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    state = Server()
    handler = type("H", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith((".part", ".ifrange")))


def test_parallel_download_manifest(server, tmp_path):
    datas = {f"img{i}.dng": server.add(f"img{i}.dng", 50_000 + i) for i in range(6)}
    server.delay = 0.05
    files = download_files([f"{server.url}/{n}" for n in datas], tmp_path, **FAST)
    assert [f["name"] for f in files] == list(datas)
    for f in files:
        assert f["size"] == len(datas[f["name"]]) and f["sha256"] == sha(datas[f["name"]])
        assert (tmp_path / f["name"]).read_bytes() == datas[f["name"]]
    assert leftovers(tmp_path) == [] and server.max_active > 1


def test_cut_transfer_resumes_with_range(server, tmp_path):
    data = server.add("a.dng", 200_000)
    server.cut_once.add("/a.dng")
    url = f"{server.url}/a.dng"
    # no retries: the run fails, keeping only the partial file, never the final name
    with pytest.raises(DownloadError, match=re.escape(url)):
        download_files([url], tmp_path, **{**FAST, "retries": 0})
    assert not (tmp_path / "a.dng").exists()
    assert (tmp_path / "a.dng.part").stat().st_size == 100_000
    files = download_files([url], tmp_path, **FAST)
    assert server.requests("a.dng") == [None, "bytes=100000-"]
    assert (tmp_path / "a.dng").read_bytes() == data and files[0]["sha256"] == sha(data)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("validator", ["etag", "last_modified", "weak_etag"])
def test_resume_only_while_the_server_file_is_unchanged(server, tmp_path, validator):
    """A cut download resumes with If-Range carrying the validator recorded when it started; when
    the file changed meanwhile the server sends it whole (200) and the download starts over, instead
    of gluing the new file's tail to the old one's head."""
    name, url = "v.dng", f"{server.url}/v.dng"
    old = server.add(name, 100_000)
    if validator != "etag":  # Last-Modified only, or a weak ETag (never valid in If-Range) plus it
        (server.no_etag if validator == "last_modified" else server.weak_etag).add("/" + name)
    recorded = server.etag(name) if validator == "etag" else server.last_modified(name)
    server.cut_once.add("/" + name)
    with pytest.raises(DownloadError):
        download_files([url], tmp_path, **{**FAST, "retries": 0})
    assert (tmp_path / "v.dng.part").read_bytes() == old[:50_000]
    assert _read_tag(tmp_path / "v.dng.part.ifrange") == (recorded, 100_000)

    new = server.add(name, 100_000)  # the server's file changes between the attempts
    server.mtime["/" + name] = 1_700_000_000
    files = download_files([url], tmp_path, **FAST)
    assert server.requests(name) == [None, "bytes=50000-"]
    assert server.if_ranges(name) == [None, recorded]
    assert (tmp_path / name).read_bytes() == new and files[0]["sha256"] == sha(new)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("change", ["etag", "size"])
def test_server_ignoring_if_range_cannot_splice_two_versions(server, tmp_path, change):
    """Issue 19.3: the server honours Range but ignores If-Range, so it answers 206 with the new
    file's tail. Its own validator (or its total size) differs from the recorded one: start over."""
    name, url = "s.dng", f"{server.url}/s.dng"
    server.ignore_if_range.add("/" + name)
    if change == "size":  # Last-Modified alone, unchanged below: only the total size tells
        server.no_etag.add("/" + name)
    server.add(name, 100_000)
    server.cut_once.add("/" + name)
    with pytest.raises(DownloadError):
        download_files([url], tmp_path, **{**FAST, "retries": 0})
    new = server.add(name, 100_000 if change == "etag" else 120_000)
    files = download_files([url], tmp_path, **FAST)
    assert server.requests(name) == [None, "bytes=50000-", None]  # the 206 was dropped, then a whole GET
    assert (tmp_path / name).read_bytes() == new and files[0]["sha256"] == sha(new)
    assert leftovers(tmp_path) == []


def test_a_trickling_server_meets_the_deadline(server, tmp_path):
    """Issue 19.4: a per-read timeout never fires on one byte a second; each attempt has a deadline
    (and resumes where the last one stopped), so the whole download ends."""
    server.add("t.dng", 4000)
    server.trickle["/t.dng"] = 0.05
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="still downloading after 0.3 s"):
        download_files([f"{server.url}/t.dng"], tmp_path, **{**FAST, "retries": 1, "deadline": 0.3})
    assert time.monotonic() - t0 < 30
    assert server.requests("t.dng")[1].startswith("bytes=")  # the second attempt resumed


def test_redirect_to_another_scheme_is_refused(server, tmp_path):
    server.redirects["/r.dng"] = "ftp://127.0.0.1/r.dng"
    with pytest.raises(DownloadError, match="refusing redirect to 'ftp://127.0.0.1/r.dng'"):
        download_files([f"{server.url}/r.dng"], tmp_path, **FAST)
    server.add("real.dng", 3000)
    server.redirects["/h.dng"] = f"{server.url}/real.dng"  # http(s) redirects still work
    assert download_files([f"{server.url}/h.dng"], tmp_path, **FAST)[0]["name"] == "h.dng"


def test_a_file_name_too_long_for_the_disk_is_one_line(tmp_path):
    with pytest.raises(CaispError, match="file name is 300 bytes long"):
        download_files([f"http://127.0.0.1/{'a' * 296}.dng"], tmp_path, **FAST)


def test_resume_of_unchanged_file_sends_its_validator(server, tmp_path):
    data = server.add("u.dng", 80_000)
    server.cut_once.add("/u.dng")
    download_files([f"{server.url}/u.dng"], tmp_path, **FAST)
    assert server.requests("u.dng") == [None, "bytes=40000-"]
    assert server.if_ranges("u.dng") == [None, server.etag("u.dng")]
    assert (tmp_path / "u.dng").read_bytes() == data and leftovers(tmp_path) == []


def test_no_validator_known_restarts_from_zero(server, tmp_path):
    """Neither ETag nor Last-Modified: nothing proves the rest belongs to the same file."""
    data = server.add("n.dng", 60_000)
    server.no_etag.add("/n.dng")
    server.no_last_modified.add("/n.dng")
    server.cut_once.add("/n.dng")
    download_files([f"{server.url}/n.dng"], tmp_path, **FAST)
    assert server.requests("n.dng") == [None, None]
    assert (tmp_path / "n.dng").read_bytes() == data and leftovers(tmp_path) == []
    # a .part left by an older caisp (no validator beside it) is not trusted either
    (tmp_path / "m.dng.part").write_bytes(data[:1000])
    server.files["/m.dng"] = data
    download_files([f"{server.url}/m.dng"], tmp_path, **FAST)
    assert server.requests("m.dng") == [None] and (tmp_path / "m.dng").read_bytes() == data


def test_cut_transfer_resumes_within_one_run(server, tmp_path):
    data = server.add("b.dng", 64_001)
    server.cut_once.add("/b.dng")
    download_files([f"{server.url}/b.dng"], tmp_path, **FAST)
    assert server.requests("b.dng") == [None, "bytes=32000-"]
    assert (tmp_path / "b.dng").read_bytes() == data


def test_range_ignored_or_unsatisfiable_restarts(server, tmp_path):
    a, b = server.add("a.dng", 10_000), server.add("b.dng", 10_000)
    server.ignore_range.add("/a.dng")
    (tmp_path / "a.dng.part").write_bytes(b"x" * 3000)  # server answers 200: start over
    (tmp_path / "b.dng.part").write_bytes(b"y" * 20_000)  # longer than the file: 416, start over
    for name in ("a.dng", "b.dng"):  # as recorded when those partial downloads started
        (tmp_path / f"{name}.part.ifrange").write_text(server.etag(name) + "\n")
    download_files([f"{server.url}/a.dng", f"{server.url}/b.dng"], tmp_path, **FAST)
    assert (tmp_path / "a.dng").read_bytes() == a and (tmp_path / "b.dng").read_bytes() == b
    assert server.requests("b.dng") == ["bytes=20000-", None]
    assert leftovers(tmp_path) == []


def test_url_with_spaces(server, tmp_path):
    data = os.urandom(3000)
    server.files["/x%20(original).dng"] = data
    files = download_files([f"{server.url}/x (original).dng"], tmp_path, **FAST)
    assert files[0]["name"] == "x (original).dng" and (tmp_path / "x (original).dng").read_bytes() == data


def test_404_reported_others_complete(server, tmp_path):
    ok = server.add("ok.dng", 5000)
    urls = [f"{server.url}/ok.dng", f"{server.url}/missing.dng"]
    with pytest.raises(DownloadError) as err:
        download_files(urls, tmp_path, **FAST)
    assert urls[1] in str(err.value) and "404" in str(err.value) and urls[0] not in str(err.value)
    assert list(err.value.failed) == [urls[1]]
    assert len(server.requests("missing.dng")) == 1  # no retries for a 404
    assert (tmp_path / "ok.dng").read_bytes() == ok and err.value.files[0]["name"] == "ok.dng"
    assert not (tmp_path / "missing.dng").exists()


def test_fivek_writes_manifest_despite_failure(server, tmp_path):
    server.add("ok.dng", 5000)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{server.url}/ok.dng\n{server.url}/missing.dng\n")
    with pytest.raises(CaispError, match="missing.dng"):
        download_fivek(str(listing), tmp_path / "raw", workers=2, retries=1, backoff=0.001, timeout=5)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["source"] == "fivek" and [f["name"] for f in manifest["files"]] == ["ok.dng"]


def test_5xx_retried_then_ok(server, tmp_path):
    data = server.add("c.dng", 1000)
    server.statuses["/c.dng"] = [500, 503]
    files = download_files([f"{server.url}/c.dng"], tmp_path, **FAST)
    assert len(server.requests("c.dng")) == 3 and files[0]["sha256"] == sha(data)


def test_5xx_gives_up_after_retries(server, tmp_path):
    server.add("d.dng", 1000)
    server.statuses["/d.dng"] = [500] * 10
    with pytest.raises(DownloadError, match="d.dng"):
        download_files([f"{server.url}/d.dng"], tmp_path, **{**FAST, "retries": 2})
    assert len(server.requests("d.dng")) == 3


def test_checksum_mismatch(server, tmp_path):
    data = server.add("e.dng", 2000)
    good, bad = f"{server.url}/e.dng", f"{server.url}/f.dng"
    server.files["/f.dng"] = data
    with pytest.raises(DownloadError) as err:
        download_files([(good, sha(data)), (bad, "0" * 64)], tmp_path, **FAST)
    assert list(err.value.failed) == [bad] and "sha256" in str(err.value)
    assert (tmp_path / "e.dng").exists() and not (tmp_path / "f.dng").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["{url}/../evil.dng", "{url}/a%2F..%2Fevil.dng", "{url}/dir/", "{url}/.hidden",
                                 "ftp://127.0.0.1/x.dng", "file:///etc/passwd", "../evil.dng", "{url}/manifest.json",
                                 "{url}/x.dng.part.ifrange"])
def test_refused_entries_before_any_download(server, tmp_path, bad):
    server.add("fine.dng", 100)
    bad = bad.format(url=server.url)
    with pytest.raises(CaispError, match=re.escape(repr(bad))):
        download_files([f"{server.url}/fine.dng", bad], tmp_path / "out", **FAST)
    assert server.log == [] and not (tmp_path / "out").exists()


def test_duplicate_names_refused(server, tmp_path):
    with pytest.raises(CaispError, match="both write"):
        download_files([f"{server.url}/a/x.dng", f"{server.url}/b/x.dng"], tmp_path, **FAST)


def test_read_url_list_formats(server, tmp_path):
    digest = "A" * 64
    text = f"# comment\n\n  {server.url}/a.dng  \n{server.url}/b c.dng \t {digest}\n"
    listing = tmp_path / "list.txt"
    listing.write_text(text)
    server.files["/list.txt"] = text.encode()
    want = [(f"{server.url}/a.dng", None), (f"{server.url}/b c.dng", digest.lower())]
    assert read_url_list(str(listing)) == want
    assert read_url_list(listing.as_uri()) == want
    assert read_url_list(f"{server.url}/list.txt") == want


@pytest.mark.parametrize("line, match", [("http://h/a.dng abc123", "line 2.*checksum"),
                                         ("ftp://h/a.dng", "line 2.*ftp"), ("http://h/../evil.dng", "line 2.*evil")])
def test_read_url_list_refuses(tmp_path, line, match):
    listing = tmp_path / "list.txt"
    listing.write_text(f"http://h/ok.dng\n{line}\n")
    with pytest.raises(CaispError, match=match):
        read_url_list(str(listing))


def test_read_url_list_missing_or_empty(server, tmp_path):
    with pytest.raises(CaispError, match="nope.txt"):
        read_url_list(str(tmp_path / "nope.txt"))
    with pytest.raises(CaispError, match="nope.txt"):
        read_url_list(f"{server.url}/nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(CaispError, match="no URLs"):
        read_url_list(str(tmp_path / "empty.txt"))


def test_limit(server, tmp_path):
    for i in range(5):
        server.add(f"{i}.dng", 100)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{server.url}/{i}.dng\n" for i in range(5)))
    files = download_fivek(listing.as_uri(), tmp_path / "raw", workers=2, backoff=0.001, timeout=5, limit=2)
    assert [f["name"] for f in files] == ["0.dng", "1.dng"] and len(server.log) == 2
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["0.dng", "1.dng", "manifest.json"]


def test_rerun_skips_complete_files(server, tmp_path):
    for i in range(3):
        server.add(f"{i}.dng", 1000)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{server.url}/{i}.dng\n" for i in range(3)))
    first = download_fivek(str(listing), tmp_path / "raw", workers=2, backoff=0.001, timeout=5)
    assert len(server.log) == 3
    assert download_fivek(str(listing), tmp_path / "raw", workers=2, backoff=0.001, timeout=5) == first
    assert len(server.log) == 3
    # a file whose size no longer matches the manifest is fetched again
    (tmp_path / "raw" / "2.dng").write_bytes(b"short")
    assert download_fivek(str(listing), tmp_path / "raw", workers=2, backoff=0.001, timeout=5) == first
    assert [p for p, _ in server.log[3:]] == ["/2.dng"]
    # without a manifest (run interrupted before writing it) complete files are re-hashed, not fetched
    (tmp_path / "raw" / "manifest.json").unlink()
    assert download_fivek(str(listing), tmp_path / "raw", workers=2, backoff=0.001, timeout=5) == first
    assert len(server.log) == 4


def test_read_shared_fivek_list():
    if not FIVEK_LIST.is_file():
        pytest.skip("../shared/fivek/NIKON_D700.txt is absent")
    entries = read_url_list(str(FIVEK_LIST))
    assert len(entries) == 487 and len({u.rsplit("/", 1)[1] for u, _ in entries}) == 487
    assert all(u.startswith("https://") and u.endswith(".dng") and s is None for u, s in entries)


def test_copy_folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.DNG").write_bytes(b"dng bytes")
    (src / "b.nef").write_bytes(b"nef bytes" * 100)
    (src / "notes.txt").write_text("not a raw")
    (src / "._a.DNG").write_bytes(b"macOS resource fork")
    (src / "sub" / "c.cr2").write_bytes(b"nested")
    files = copy_folder(src, tmp_path / "raw")
    assert [f["name"] for f in files] == ["a.DNG", "b.nef"]
    assert files[1] == {"name": "b.nef", "size": 900, "sha256": sha(b"nef bytes" * 100)}
    assert (tmp_path / "raw" / "b.nef").read_bytes() == b"nef bytes" * 100
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest == {"source": "folder", "files": files}
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["a.DNG", "b.nef", "manifest.json"]


def test_copy_folder_errors(tmp_path):
    with pytest.raises(CaispError, match=re.escape(str(tmp_path / "nope"))):
        copy_folder(tmp_path / "nope", tmp_path / "raw")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.jpg").write_bytes(b"jpeg")
    with pytest.raises(CaispError, match=re.escape(str(tmp_path / "empty"))):
        copy_folder(tmp_path / "empty", tmp_path / "raw")


def test_file_and_write_manifest(tmp_path):
    (tmp_path / "x.dng").write_bytes(b"abc")
    files = file_manifest([tmp_path / "x.dng"])
    assert files == [{"name": "x.dng", "size": 3, "sha256": sha(b"abc")}]
    path = write_manifest(tmp_path / "out", "synthetic", files)
    assert json.loads(path.read_text()) == {"source": "synthetic", "files": files}
