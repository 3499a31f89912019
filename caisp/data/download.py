"""Raw file sources for the `download` stage (FiveK DNGs over HTTP, or a user's folder) and manifests."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from caisp import CaispError, __version__
from caisp.io import atomic_path, write_json

USER_AGENT = f"caisp/{__version__} (python-urllib)"
RAW_EXTENSIONS = frozenset(
    "dng nef nrw cr2 cr3 crw arw srf sr2 raf orf rw2 pef kdc dcr mrw 3fr erf mef mos raw srw x3f iiq".split())
MANIFEST = "manifest.json"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# File systems take 255-byte names; `.part.ifrange` and atomic_path's `.<name>.<random>.part` need room.
MAX_NAME = 200


class DownloadError(CaispError):
    """Some downloads failed; `files` holds the manifest entries of those that succeeded."""

    def __init__(self, message: str, files: list[dict], failed: dict[str, str]):
        super().__init__(message)
        self.files, self.failed = files, failed


class _Fatal(Exception):
    """A failure that retrying cannot fix (404, checksum mismatch)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_manifest(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Manifest entries {name, size, sha256} for `paths` (hashed in streaming fashion)."""
    return [{"name": Path(p).name, "size": Path(p).stat().st_size, "sha256": _sha256(Path(p))} for p in paths]


def write_manifest(out_dir: str | os.PathLike, source: str, files: list[dict]) -> Path:
    """Write `out_dir/manifest.json` = {"source", "files"} atomically."""
    path = Path(out_dir) / MANIFEST
    write_json(path, {"source": source, "files": list(files)})
    return path


def _name_for(url: str) -> str:
    """The output file name of `url`; refuses schemes other than http(s) and names escaping the folder."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CaispError(f"refusing list entry {url!r}: only http:// and https:// URLs are allowed")
    segments = parts.path.split("/")
    # `..` anywhere in the path is never legitimate in a download list, even if a server would normalise it
    if any(urllib.parse.unquote(s) in ("..", ".") for s in segments[:-1]):
        raise CaispError(f"refusing list entry {url!r}: '..' in the URL path")
    name = urllib.parse.unquote(segments[-1])
    if (name in ("", ".", "..", MANIFEST) or name.startswith(".") or name.endswith((".part", ".part.ifrange"))
            or any(c in name for c in "/\\\0:")):
        raise CaispError(f"refusing list entry {url!r}: file name {name!r} is not a plain file name")
    if len(name.encode("utf-8")) > MAX_NAME:
        raise CaispError(f"refusing list entry {url[:80]!r}...: its file name is {len(name.encode('utf-8'))} "
                         f"bytes long, more than the {MAX_NAME} a file system takes with our temporary suffixes")
    return name


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only: urllib's own handler also follows ftp://, which would bypass
    the scheme allow-list of the download list."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(req.full_url, code, f"refusing redirect to {newurl!r}: only http:// "
                                         "and https:// are allowed", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _open(url: str, timeout: float, headers: dict[str, str] | None = None):
    url = urllib.parse.quote(url, safe="/:?#[]@!$&'()*+,;=%~")  # spaces etc.; keeps existing %XX escapes
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return _OPENER.open(req, timeout=timeout)


def read_url_list(list_url: str, *, timeout: float = 30) -> list[tuple[str, str | None]]:
    """Parse a list of `URL [sha256]` lines (blank and `#` lines ignored) from a URL, file:// URL or path."""
    scheme = urllib.parse.urlsplit(list_url).scheme.lower()
    try:
        if scheme in ("http", "https"):
            with _open(list_url, timeout) as resp:
                data = resp.read()
        elif scheme == "file":
            data = Path(urllib.request.url2pathname(urllib.parse.urlsplit(list_url).path)).read_bytes()
        elif len(scheme) <= 1:  # no scheme, or a Windows drive letter
            data = Path(list_url).read_bytes()
        else:
            raise CaispError(f"URL list {list_url!r}: unsupported scheme {scheme!r} (use http(s), file:// or a path)")
    except (OSError, http.client.HTTPException) as e:
        raise CaispError(f"cannot read URL list {list_url}: {e}") from e
    entries: list[tuple[str, str | None]] = []
    for lineno, line in enumerate(data.decode("utf-8-sig", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"URL list {list_url} line {lineno}"
        # FiveK URLs may contain spaces ("a1379-_DSC5348 (original).dng"): only a trailing hex token is a hash
        parts = line.rsplit(None, 1)
        url, last = parts if len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]+", parts[1]) else (line, "")
        if last and not _SHA256.fullmatch(last):
            raise CaispError(f"{where}: checksum {last!r} is not a sha256 (64 hex digits)")
        try:
            _name_for(url)
        except CaispError as e:
            raise CaispError(f"{where}: {e}") from None
        entries.append((url, last.lower() or None))
    if not entries:
        raise CaispError(f"URL list {list_url} contains no URLs")
    return entries


def _ifrange_path(part: Path) -> Path:
    """Beside `x.part`: the validator and size of the server's file that `x.part` holds the start of."""
    return part.with_name(part.name + ".ifrange")


def _read_tag(tag: Path) -> tuple[str, int | None]:
    """(validator, total size or None) recorded when `x.part` started; ("", None) if unknown. Tags of
    earlier versions hold the validator alone."""
    try:
        text = tag.read_text().strip()
    except OSError:
        return "", None
    try:
        obj = json.loads(text)
        return str(obj.get("validator") or ""), (int(obj["size"]) if obj.get("size") is not None else None)
    except (ValueError, TypeError, KeyError, AttributeError):
        return text, None


def _total(headers) -> int | None:
    """The whole file's size of a 200 (Content-Length) or 206 (Content-Range's total) reply."""
    m = re.fullmatch(r"bytes \d+-\d+/(\d+)", (headers.get("Content-Range") or "").strip())
    if m:
        return int(m.group(1))
    length = headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _validator(headers) -> str | None:
    """What If-Range may carry for a response: its strong ETag, else its Last-Modified date (a weak
    ETag never matches in If-Range, RFC 9110 13.1.5); None when the server sends neither."""
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    return (headers.get("Last-Modified") or "").strip() or None


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _ifrange_path(part).unlink(missing_ok=True)


def _transfer(url: str, part: Path, timeout: float, deadline: float) -> None:
    """Fetch `url` into `part`, resuming from its current size only if the server's file is still the
    one `part` started from: the request carries If-Range with the validator recorded then, so a
    changed file comes back whole (200) and replaces `part`, and a 206 is appended only if its own
    validator and total size are the recorded ones (a server may ignore If-Range but honour Range, and
    would splice two versions). Raises if the body is incomplete, or still arriving after `deadline`
    seconds (a trickling server; `part` keeps what came, and the next attempt resumes)."""
    tag = _ifrange_path(part)
    have = part.stat().st_size if part.exists() else 0
    validator, size = _read_tag(tag) if have and tag.is_file() else ("", None)
    # No validator known: a resumed body could belong to another version of the file; start over.
    headers = {"Range": f"bytes={have}-", "If-Range": validator} if validator else None
    try:
        resp = _open(url, timeout, headers)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and headers:
            # Range past the end: `part` is complete if the server's size matches it, else it is stale
            if e.headers.get("Content-Range", "") == f"bytes */{have}":
                return
            _discard(part)
            return _transfer(url, part, timeout, deadline)
        raise
    with resp:
        start = 0  # a 200 sends everything (file changed, or Range ignored): start over
        if resp.status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            start = int(m.group(1)) if m else -1
            if start != have:
                _discard(part)
                raise http.client.HTTPException(f"server answered Range {have}- with {m and m.group(0)!r}")
            if _validator(resp.headers) != validator or (size is not None and _total(resp.headers) != size):
                _discard(part)  # another version of the file: its tail must not follow our head
                resp.close()
                return _transfer(url, part, timeout, deadline)
        if start == 0:  # a new body: record what it is before its first byte lands, so a cut can resume
            new = _validator(resp.headers)
            if new:
                tag.write_text(json.dumps({"validator": new, "size": _total(resp.headers)}) + "\n")
            else:
                tag.unlink(missing_ok=True)
        length = resp.headers.get("Content-Length")
        written = 0
        end = time.monotonic() + deadline
        with open(part, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            # read1: whatever one socket read brings, so a trickle meets the deadline check in time
            while chunk := resp.read1(_CHUNK):
                f.write(chunk)
                written += len(chunk)
                if time.monotonic() > end and (length is None or written < int(length)):
                    raise TimeoutError(f"still downloading after {deadline:g} s ({start + written} bytes so far)")
        if length is not None and written < int(length):
            raise http.client.IncompleteRead(b"", int(length) - written)


def _fetch(url: str, sha: str | None, dest: Path, retries: int, backoff: float, timeout: float,
           deadline: float) -> dict:
    """Download `url` to `dest` via `dest.part` with resume and retries; verify `sha` before renaming."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, deadline)
            break
        except urllib.error.HTTPError as e:
            # Client errors (404, 403, ...) will not heal by retrying; 408/429 and 5xx might
            if e.code < 500 and e.code not in (408, 429):
                raise _Fatal(f"HTTP {e.code} {e.reason}") from None
            if attempt == retries:
                raise
        except (OSError, http.client.HTTPException):
            if attempt == retries:
                raise
        time.sleep(backoff * 2 ** attempt)
    digest = _sha256(part)
    if sha is not None and digest != sha:
        _discard(part)
        raise _Fatal(f"sha256 mismatch: expected {sha}, got {digest}")
    os.replace(part, dest)
    _ifrange_path(part).unlink(missing_ok=True)
    return {"name": dest.name, "size": dest.stat().st_size, "sha256": digest}


def _done(dest: Path, sha: str | None, known: dict[str, dict]) -> dict | None:
    """The manifest entry of an already complete `dest` (final names only ever hold complete files)."""
    if not dest.is_file():
        return None
    entry = known.get(dest.name)
    if entry is None:  # finished before an interrupted run could write the manifest
        entry = file_manifest([dest])[0]
    elif entry["size"] != dest.stat().st_size:  # changed since the manifest was written: fetch again
        return None
    return entry if sha is None or entry["sha256"] == sha else None


def _load_manifest(out_dir: Path) -> dict[str, dict]:
    try:
        files = json.loads((out_dir / MANIFEST).read_text())["files"]
        return {f["name"]: {k: f[k] for k in ("name", "size", "sha256")} for f in files}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no usable manifest: files on disk get re-hashed instead


def download_files(entries: Sequence[tuple[str, str | None] | str], out_dir: str | os.PathLike, *, workers: int = 8,
                   retries: int = 4, backoff: float = 0.5, timeout: float = 60.0, deadline: float = 900.0,
                   progress: bool = True) -> list[dict]:
    """Download `(url, sha256 or None)` entries into `out_dir` in parallel; return manifest entries in
    list order. Complete files are skipped; on failures raise `DownloadError` after finishing the rest.
    `timeout` bounds each socket read, `deadline` each attempt at a file (attempts resume), so one file
    takes at most about (retries + 1) * deadline seconds."""
    out = Path(out_dir)
    items = [(e, None) if isinstance(e, str) else (e[0], e[1] and e[1].lower()) for e in entries]
    names: dict[str, str] = {}
    for url, sha in items:  # validate everything before the first byte moves
        name = _name_for(url)
        if name in names:
            raise CaispError(f"list entries {names[name]!r} and {url!r} both write file {name!r}")
        if sha is not None and not _SHA256.fullmatch(sha):
            raise CaispError(f"list entry {url!r}: {sha!r} is not a sha256 (64 hex digits)")
        names[name] = url
    if workers < 1 or retries < 0:
        raise CaispError(f"download needs workers >= 1 and retries >= 0 (got workers={workers}, retries={retries})")
    out.mkdir(parents=True, exist_ok=True)
    known = _load_manifest(out)
    results = {url: e for url, sha in items if (e := _done(out / _name_for(url), sha, known)) is not None}
    todo = [(url, sha) for url, sha in items if url not in results]
    failed: dict[str, str] = {}
    # disable=None lets tqdm switch itself off when stderr is not a terminal (pytest, CI logs)
    bar = tqdm(total=len(items), initial=len(results), unit="file", desc="download", disable=None if progress else True)
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_fetch, url, sha, out / _name_for(url), retries, backoff, timeout, deadline): url
                   for url, sha in todo}
        for fut in as_completed(futures):
            url = futures[fut]
            try:
                results[url] = fut.result()
            except Exception as e:  # noqa: BLE001 - every failure is reported by URL below
                failed[url] = str(e) or type(e).__name__
            bar.update()
    files = [results[url] for url, _ in items if url in results]
    if failed:
        lines = "\n".join(f"  {url}: {why}" for url, why in failed.items())
        raise DownloadError(f"{len(failed)} of {len(items)} downloads into {out} failed:\n{lines}", files, failed)
    return files


def download_fivek(list_url: str, out_dir: str | os.PathLike, *, workers: int = 8, retries: int = 4,
                   backoff: float = 0.5, timeout: float = 60.0, limit: int | None = None) -> list[dict]:
    """Download the FiveK DNGs named by `list_url` (first `limit` only if given) and write the manifest,
    also when some downloads fail (those are then raised as one `DownloadError`)."""
    if limit is not None and limit < 1:
        raise CaispError(f"download limit must be a positive integer or null, got {limit!r}")
    entries = read_url_list(list_url, timeout=timeout)[:limit]
    try:
        files = download_files(entries, out_dir, workers=workers, retries=retries, backoff=backoff, timeout=timeout)
    except DownloadError as e:
        write_manifest(out_dir, "fivek", e.files)
        raise
    write_manifest(out_dir, "fivek", files)
    return files


def copy_folder(src: str | os.PathLike, out_dir: str | os.PathLike) -> list[dict]:
    """Copy the raw files (by extension; top level, not hidden) of folder `src` into `out_dir` atomically and
    write the manifest."""
    src, out = Path(src), Path(out_dir)
    if not src.is_dir():
        raise CaispError(f"raw folder {src} does not exist or is not a folder")
    paths = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix[1:].lower() in RAW_EXTENSIONS)
    if not paths:
        raise CaispError(f"raw folder {src} holds no raw files (extensions: {', '.join(sorted(RAW_EXTENSIONS))})")
    files = []
    for p in paths:
        h, size = hashlib.sha256(), 0
        with atomic_path(out / p.name) as tmp, open(p, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(_CHUNK):  # hash while copying: one read of each file
                h.update(chunk)
                fout.write(chunk)
                size += len(chunk)
        files.append({"name": p.name, "size": size, "sha256": h.hexdigest()})
    write_manifest(out, "folder", files)
    return files
