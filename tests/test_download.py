"""Downloads against a local HTTP server on 127.0.0.1: hashes, resume, hostile archives, offline."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from detseg.data import download as dl
from detseg.data.archives import safe_extract
from detseg.errors import UserError


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for info in members:
            payload = data.get(info.name, b"")
            info.size = len(payload) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return buffer.getvalue()


class FileServer:
    """Serves ``files[path] = bytes``; can ignore Range, or cut the first response short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.cut_first_after: int | None = None
        self.requests: list[dict[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and not server.ignore_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_after is not None:
                    body = body[: server.cut_first_after]
                    server.cut_first_after = None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.watchdog = threading.Timer(60.0, self.stop)  # never outlive a stuck test
        self.watchdog.daemon = True
        self.watchdog.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.watchdog.cancel()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.stop()


GOOD_FILES = {"toy/images/a.txt": b"hello" * 1000, "toy/labels/a.txt": b"0 0.5 0.5 0.1 0.1\n"}


def register(
    monkeypatch, server: FileServer, payload: bytes, *, sha256=True, size=True, name="toy"
):
    """Put a one-archive dataset ``name`` into the registry, served by ``server``."""
    server.files[f"/{name}.zip"] = payload
    remote = dl.RemoteFile(
        url=f"{server.url}/{name}.zip",
        filename=f"{name}.zip",
        size=len(payload) if size else None,
        sha256=hashlib.sha256(payload).hexdigest() if sha256 else None,
    )
    source = replace(dl.DATASETS["pennfudan"], name=name, files=(remote,), layout="toy")
    monkeypatch.setitem(dl.DATASETS, name, source)
    return source


def test_registry_is_complete_and_hashes_are_well_formed():
    recipes = {name: src.recipe for name, src in dl.DATASETS.items()}
    assert recipes == {
        "pennfudan": "pedestrians",
        "racoon": "racoon",
        "caltech101": "single_object",
        "coco_val2017": "shapes",
        "kitti_road": "road",
        "tgs_salt": "salt",
        "cityscapes_pairs": "street",
    }
    for src in dl.DATASETS.values():
        assert (src.manual is None) == bool(src.files), src.name
        for f in src.files:
            assert f.url.startswith("http")
            assert f.sha256 is None or len(f.sha256) == 64 and int(f.sha256, 16) >= 0
            assert f.md5 is None or len(f.md5) == 32 and int(f.md5, 16) >= 0
            assert f.hash_source


def test_good_archive_then_idempotent_without_network(monkeypatch, server, tmp_path):
    register(monkeypatch, server, make_zip(GOOD_FILES))
    folder = dl.download("toy", tmp_path, progress=True)
    assert folder == tmp_path / "toy" / "toy"
    assert (folder / "images" / "a.txt").read_bytes() == GOOD_FILES["toy/images/a.txt"]
    assert (tmp_path / "downloads" / "toy.zip").is_file()
    assert not list(tmp_path.glob(".toy-*")), "staging folder left behind"
    server.stop()  # second call must not touch the network
    assert dl.download("toy", tmp_path, progress=False) == folder
    assert len(server.requests) == 1


def test_progress_in_a_log_is_two_plain_lines(monkeypatch, server, tmp_path, capsys):
    register(monkeypatch, server, make_zip(GOOD_FILES))
    dl.download("toy", tmp_path, progress=True)  # capsys: stderr is not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    assert f"downloading {server.url}/toy.zip -> {tmp_path / 'downloads' / 'toy.zip'}\n" in err
    size = (tmp_path / "downloads" / "toy.zip").stat().st_size
    assert f"downloaded {size} bytes of toy.zip" in err


def test_unpinned_hash_is_printed(monkeypatch, server, tmp_path, capsys):
    payload = make_zip(GOOD_FILES)
    register(monkeypatch, server, payload, sha256=False, size=False)
    dl.download("toy", tmp_path, progress=False)
    assert f"sha256={hashlib.sha256(payload).hexdigest()}" in capsys.readouterr().out


def test_md5_is_checked_when_no_sha256(monkeypatch, server, tmp_path):
    payload = make_zip(GOOD_FILES)
    source = register(monkeypatch, server, payload, sha256=False)
    bad = replace(source.files[0], md5="0" * 32)
    monkeypatch.setitem(dl.DATASETS, "toy", replace(source, files=(bad,)))
    with pytest.raises(UserError, match="MD5 mismatch"):
        dl.download("toy", tmp_path, progress=False)


def test_wrong_hash_deletes_part_and_names_both(monkeypatch, server, tmp_path):
    payload = make_zip(GOOD_FILES)
    source = register(monkeypatch, server, payload)
    wrong = replace(source.files[0], sha256="ab" * 32)
    monkeypatch.setitem(dl.DATASETS, "toy", replace(source, files=(wrong,)))
    with pytest.raises(UserError) as info:
        dl.download("toy", tmp_path, progress=False)
    message = info.value.message()
    assert "ab" * 32 in message and hashlib.sha256(payload).hexdigest() in message
    assert not list((tmp_path / "downloads").iterdir())
    assert not (tmp_path / "toy").exists()


def test_wrong_size_is_refused(monkeypatch, server, tmp_path):
    source = register(monkeypatch, server, make_zip(GOOD_FILES))
    wrong = replace(source.files[0], size=source.files[0].size + 1)
    monkeypatch.setitem(dl.DATASETS, "toy", replace(source, files=(wrong,)))
    with pytest.raises(UserError, match="size mismatch"):
        dl.download("toy", tmp_path, progress=False)


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "toy/../../evil.txt"])
def test_zip_member_escaping_is_refused(monkeypatch, server, tmp_path, member):
    register(monkeypatch, server, make_zip({"toy/ok.txt": b"ok", member: b"evil"}))
    with pytest.raises(UserError, match="escapes the target folder"):
        dl.download("toy", tmp_path / "root", progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "root" / "toy").exists()
    assert not list((tmp_path / "root").glob(".toy-*"))


def tar_file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "members",
    [
        [tar_file("../evil.txt")],
        [tar_file("/tmp/evil.txt")],
        [tar_link("toy/link", "../../outside")],
        [tar_link("toy/link", "/etc/passwd")],
        [tar_link("toy/hard", "../outside", tarfile.LNKTYPE)],
    ],
    ids=["dotdot", "absolute", "symlink-up", "symlink-abs", "hardlink-up"],
)
def test_tar_member_escaping_is_refused(tmp_path, members):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_tar([tar_file("toy/ok.txt"), *members], {"toy/ok.txt": b"ok"}))
    with pytest.raises(UserError, match="refusing to extract"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "toy").exists(), "nothing is written before the check"


def test_tar_with_inside_symlink_extracts(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    members = [tar_file("toy/a.txt"), tar_link("toy/b.txt", "a.txt")]
    archive.write_bytes(make_tar(members, {"toy/a.txt": b"data"}))
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "toy" / "b.txt").read_bytes() == b"data"


def test_server_gone_mid_file_then_resume_with_range(monkeypatch, server, tmp_path):
    payload = make_zip({"toy/big.bin": bytes(range(256)) * 800})  # incompressible enough
    register(monkeypatch, server, payload)
    server.cut_first_after = 5000
    with pytest.raises(UserError, match="cannot download") as info:
        dl.download("toy", tmp_path, progress=False)
    assert "a partial file resumes" in info.value.message()
    part = tmp_path / "downloads" / "toy.zip.part"
    assert part.stat().st_size == 5000
    folder = dl.download("toy", tmp_path, progress=False)
    assert server.requests[-1]["range"] == "bytes=5000-"
    assert (folder / "big.bin").read_bytes() == bytes(range(256)) * 800
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(monkeypatch, server, tmp_path):
    payload = make_zip(GOOD_FILES)
    register(monkeypatch, server, payload)
    server.ignore_range = True
    part = tmp_path / "downloads" / "toy.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not be kept")
    folder = dl.download("toy", tmp_path, progress=False)
    assert server.requests[-1]["range"] is not None  # it asked, the server answered 200
    assert (tmp_path / "downloads" / "toy.zip").read_bytes() == payload
    assert (folder / "images" / "a.txt").is_file()


def test_offline_message_names_url_path_and_recipe(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = dl.DATASETS["pennfudan"]
    remote = replace(source.files[0], url=f"http://127.0.0.1:{port}/PennFudanPed.zip")
    monkeypatch.setitem(dl.DATASETS, "pennfudan", replace(source, files=(remote,)))
    with pytest.raises(UserError) as info:
        dl.download("pennfudan", tmp_path, progress=False)
    message = info.value.message()
    assert remote.url in message
    assert str(tmp_path / "downloads" / "PennFudanPed.zip") in message
    assert "detseg data make pedestrians" in message


def test_manual_dataset_gives_instructions_then_accepts_files(tmp_path):
    with pytest.raises(UserError) as info:
        dl.download("tgs_salt", tmp_path)
    message = info.value.message()
    assert "kaggle competitions download" in message and "detseg data make salt" in message
    assert str(tmp_path / "tgs_salt" / "train") in message
    (tmp_path / "tgs_salt" / "train" / "images").mkdir(parents=True)
    assert dl.download("tgs_salt", tmp_path) == tmp_path / "tgs_salt" / "train"


def test_unknown_name_lists_choices():
    with pytest.raises(UserError, match="coco_val2017"):
        dl.download("imagenet")


def test_default_root_comes_from_settings(isolated_dirs):
    data, _ = isolated_dirs
    assert dl.dataset_dir("kitti_road") == data / "kitti_road" / "data_road"


def test_nested_archives_are_extracted(monkeypatch, server, tmp_path):
    inner = make_tar([tar_file("cats/1.jpg")], {"cats/1.jpg": b"jpg"})
    payload = make_zip({"toy/inner.tar.gz": inner, "toy/readme": b"r"})
    source = register(monkeypatch, server, payload)
    monkeypatch.setitem(dl.DATASETS, "toy", replace(source, nested=("toy/inner.tar.gz",)))
    folder = dl.download("toy", tmp_path, progress=False)
    assert (folder / "cats" / "1.jpg").read_bytes() == b"jpg"
    assert not (folder / "inner.tar.gz").exists()


def test_sha256_of_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert dl.sha256_of(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_existing_file_is_verified_not_refetched(monkeypatch, server, tmp_path):
    payload = make_zip(GOOD_FILES)
    register(monkeypatch, server, payload)
    (tmp_path / "downloads").mkdir()
    Path(tmp_path / "downloads" / "toy.zip").write_bytes(payload)  # put there by hand
    dl.download("toy", tmp_path, progress=False)
    assert server.requests == []


def test_http_error_is_reported_with_status(monkeypatch, server, tmp_path):
    source = register(monkeypatch, server, make_zip(GOOD_FILES))
    missing = replace(source.files[0], url=f"{server.url}/gone.zip")
    monkeypatch.setitem(dl.DATASETS, "toy", replace(source, files=(missing,)))
    with pytest.raises(UserError, match="HTTP 404"):
        dl.download("toy", tmp_path, progress=False)
