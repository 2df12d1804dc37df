"""End to end: file push (plugin uploads) with a real rportd and real agents writing real files:
RPort's ``POST /files`` (multipart, with curl as its documentation shows it), the file on each
client's disk with its content, mode, owner and MD5, RPort's force/sync/ignored rules, the
agent's ``[file-reception]`` (disabled, protected paths including a symbolic link around them),
the server's own refusals (``upload denied``, a bad md5, a file over ``max_filepush_size``), and
each client's result kept for ``GET /files/{uuid}``."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rport.plugins.uploads.reception import compile_protected, glob_regex, protected_by

from ..procs import Agent, Server, running, wait_for
from .test_commands import assert_error

MAX = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root: Path = tmp_path_factory.mktemp("uploads")
    (root / "locked").mkdir()
    (root / "around").symlink_to(root / "locked")
    server = Server(root / "server", extra={"api": {"max_filepush_size": MAX}}).start()
    protected = ["/bin", "/sbin", "/boot", "/usr/bin", "/usr/sbin", "/dev", "/lib*", "/run",
                 str(root / "locked"), str(root / "glob-*" / "inner")]
    agents = [Agent(root / f"agent-{cid}", server, cid, config=conf) for cid, conf in {
        "u-a": {"file-reception": {"protected": protected}},
        "u-b": {},
        "u-off": {"file-reception": {"enabled": False}},
    }.items()]
    with running(server, agents):
        yield server, root


def push(api: httpx.Client, data: bytes, dest: Path | str, clients: list[str], **fields: str) -> str:
    form: dict[str, Any] = {"dest": str(dest), "client_id": clients, **fields}
    resp = api.post("/files", files={"upload": ("payload.bin", data)}, data=form)
    assert resp.status_code == 200, resp.text
    body = resp.json()["data"]
    assert body["filepath"] == str(dest) and body["size"] == len(data), body
    return body["uuid"]


def results(api: httpx.Client, upload_id: str) -> dict[str, dict[str, Any]]:
    """Each client's result once none is pending."""
    def done() -> dict[str, Any] | None:
        resp = api.get(f"/files/{upload_id}")
        assert resp.status_code == 200, resp.text
        upload = resp.json()["data"]
        return upload if all(c["status"] != "pending" for c in upload["clients"]) else None
    upload = wait_for(done, 30, f"upload {upload_id} to reach its clients", interval=0.05)
    return {c["client_id"]: c for c in upload["clients"]}


def test_a_file_to_two_clients(fleet: tuple[Server, Path]) -> None:
    server, root = fleet
    data = os.urandom(MAX - 1000)  # just under the limit: several windows of the stream
    dest = root / "shared" / "deep" / "payload.bin"
    upload_id = push(server.api, data, dest, ["u-a", "u-b"], mode="0640")
    res = results(server.api, upload_id)
    for client in ("u-a", "u-b"):
        assert res[client] == {"client_id": client, "uuid": upload_id, "filepath": str(dest),
                               "size": len(data), "status": "success",
                               "message": f"file successfully copied to destination {dest}"}
    # both agents wrote the same path on this one machine: it holds the file, as sent
    assert dest.read_bytes() == data
    assert hashlib.md5(dest.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    upload = server.api.get(f"/files/{upload_id}").json()["data"]
    assert upload["md5"] == hashlib.md5(data).hexdigest() and upload["mode"] == "0640"
    assert upload["client_ids"] == ["u-a", "u-b"] and upload["created_by"] == "admin"
    # nothing left behind in the temporary folders of the server and the agents
    assert list((server.data_dir / "filepush").iterdir()) == []
    for agent in ("u-a", "u-b"):
        assert list((root / f"agent-{agent}" / "data" / "filepush").iterdir()) == []
    listed = server.api.get("/files").json()
    assert listed["data"][0]["uuid"] == upload_id and listed["meta"]["count"] >= 1


def test_existing_files_force_and_sync(fleet: tuple[Server, Path]) -> None:
    server, root = fleet
    dest = root / "sync" / "conf.txt"
    first = b"version 1\n"
    assert results(server.api, push(server.api, first, dest, ["u-a"]))["u-a"]["status"] == "success"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o764 & ~_umask()  # RPort's default mode

    # exists: left alone without force or sync
    res = results(server.api, push(server.api, b"version 2\n", dest, ["u-a"]))["u-a"]
    assert res["status"] == "ignored" and res["message"] == (
        f"file {dest} already exists, should not be synched or overwritten with force"), res
    assert dest.read_bytes() == first
    # sync: the same content and no mode asked -> nothing to do
    assert results(server.api, push(server.api, first, dest, ["u-a"], sync="true"))["u-a"]["status"] == "ignored"
    # sync: same content but another mode -> written with that mode
    res = results(server.api, push(server.api, first, dest, ["u-a"], sync="1", mode="600"))["u-a"]
    assert res["status"] == "success" and stat.S_IMODE(dest.stat().st_mode) == 0o600
    # sync: other content -> replaced
    assert results(server.api, push(server.api, b"v3\n", dest, ["u-a"], sync="true"))["u-a"]["status"] == "success"
    assert dest.read_bytes() == b"v3\n"
    # force -> replaced whatever it holds
    assert results(server.api, push(server.api, b"v4\n", dest, ["u-a"], force="true"))["u-a"]["status"] == "success"
    assert dest.read_bytes() == b"v4\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_owner_and_group(fleet: tuple[Server, Path]) -> None:
    server, root = fleet
    nobody = pwd.getpwnam("nobody")
    dest = root / "owned" / "file"
    res = results(server.api, push(server.api, b"x", dest, ["u-b"], user="nobody",
                                  group=str(nobody.pw_gid)))["u-b"]
    assert res["status"] == "success", res
    assert (dest.stat().st_uid, dest.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    # an unknown user is a warning (RPort: chown failures do not fail the push)
    res = results(server.api, push(server.api, b"y", root / "owned" / "other", ["u-b"],
                                  user="no-such-user-here"))["u-b"]
    assert res["status"] == "success" and "chown of" in res["message"] and "no such user" in res["message"]


@pytest.mark.parametrize("where", ["locked/file", "locked/below/file", "around/file",
                                   "glob-x/inner/file", "/usr/bin/rport-py-upload-test",
                                   "/lib64/rport-py-upload-test"])
def test_protected_paths_are_refused(fleet: tuple[Server, Path], where: str) -> None:
    server, root = fleet
    dest = Path(where) if where.startswith("/") else root / where
    res = results(server.api, push(server.api, b"nope", dest, ["u-a"]))["u-a"]
    assert res["status"] == "error", res
    assert "matches protected pattern" in res["message"] and \
        res["message"].endswith("therefore the file push request is rejected"), res
    assert not dest.exists()


def test_reception_disabled_and_a_disconnected_client(fleet: tuple[Server, Path], tmp_path: Path) -> None:
    server, root = fleet
    gone = Agent(root / "agent-gone", server, "u-gone")
    server.wait_connected("u-gone")
    gone.stop()
    server.wait_disconnected("u-gone")
    dest = tmp_path / "f"
    res = results(server.api, push(server.api, b"data", dest, ["u-off", "u-gone", "u-b"]))
    assert res["u-off"]["status"] == "error"
    assert res["u-off"]["message"] == ("uploads are disabled on this client, check "
                                       "[file-reception] enabled option")
    assert res["u-gone"] == {"client_id": "u-gone", "uuid": res["u-b"]["uuid"], "filepath": "",
                             "size": 0, "message": "client is not connected", "status": "error"}
    assert res["u-b"]["status"] == "success" and dest.read_bytes() == b"data"


@pytest.mark.parametrize("fields, status, title", [
    ({"dest": "/proc/sys/kernel/x"}, 400, "upload denied"),
    ({"dest": "/tmp/../run/x"}, 400, "upload denied"),
    ({"dest": ""}, 400, "empty destination file path"),
    ({"dest": "relative/file"}, 400, "invalid destination file path"),
    ({"dest": "/tmp/dir/"}, 400, "invalid destination file path"),
    ({"mode": "0999"}, 400, "failed to parse file mode value 0999"),
    ({"force": "yes"}, 400, "invalid force value"),
    ({"user": "-rf"}, 400, "invalid user"),
    ({"md5": "0" * 32}, 400, "md5 check failed"),
    ({"client_id": ""}, 400, "Missing targeting parameters."),
    ({"client_id": "nope"}, 404, 'Client with id="nope" not found.'),
    ({"tags": "{not json"}, 400, "invalid tags"),
])
def test_refused_requests(fleet: tuple[Server, Path], tmp_path: Path, fields: dict[str, str],
                          status: int, title: str) -> None:
    server, _ = fleet
    form = {"dest": str(tmp_path / "f"), "client_id": "u-a", **fields}
    resp = server.api.post("/files", files={"upload": ("f", b"data")},
                           data={k: v for k, v in form.items() if v != "" or k == "dest"})
    item = assert_error(resp, status, title)
    if title == "upload denied":
        assert item["code"] == "BAD_DESTINATION"
    assert not (tmp_path / "f").exists()
    assert list((server.data_dir / "filepush").iterdir()) == []


def test_no_file_not_multipart_and_too_large(fleet: tuple[Server, Path], tmp_path: Path) -> None:
    server, _ = fleet
    api = server.api
    no_file = {"dest": (None, str(tmp_path / "f")), "client_id": (None, "u-a")}  # multipart, no file
    assert_error(api.post("/files", files=no_file), 400, "Missing file.")
    assert_error(api.post("/files", json={"dest": "/tmp/x"}), 400,
                 "request Content-Type isn't multipart/form-data")
    two = [("upload", ("a", b"1")), ("upload", ("b", b"2"))]
    assert_error(api.post("/files", files=two, data={"dest": str(tmp_path / "f"), "client_id": "u-a"}),
                 400, "Only one file may be uploaded at a time.")
    resp = api.post("/files", files={"upload": ("big", b"\0" * (MAX + 1))},
                    data={"dest": str(tmp_path / "f"), "client_id": "u-a"})
    assert_error(resp, 413, "file too large", f"the limit is {MAX} bytes")
    assert list((server.data_dir / "filepush").iterdir()) == []
    # the md5 given matches: accepted
    data = b"checked"
    uid = push(api, data, tmp_path / "g", ["u-a"], md5=hashlib.md5(data).hexdigest().upper())
    assert results(api, uid)["u-a"]["status"] == "success"
    assert_error(api.get("/files/nope"), 404, 'Upload[id="nope"] not found.')
    # an id given by the caller (RPort's id field) is the upload's; twice is refused
    uid = push(api, data, tmp_path / "h", ["u-a"], id="my-upload-1")
    assert uid == "my-upload-1"
    resp = api.post("/files", files={"upload": ("f", data)},
                    data={"dest": str(tmp_path / "i"), "client_id": "u-a", "id": "my-upload-1"})
    assert_error(resp, 409, "an upload with this id exists")


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_rport_documentations_curl_example(fleet: tuple[Server, Path], tmp_path: Path) -> None:
    server, _ = fleet
    src = tmp_path / "some-file.txt"
    src.write_text("pushed with curl\n")
    dest = tmp_path / "client" / "some-file.txt"
    out = subprocess.run(
        ["curl", "-s", "-XPOST", "-u", "admin:foobaz", "-F", f"upload=@{src}",
         "-F", "client_id=u-a", "-F", "client_id=u-b", "-F", f"dest={dest}", "-F", "force=true",
         "-F", "sync=true", "-F", "mode=0744", f"{server.api_url}/api/v1/files"],
        capture_output=True, text=True, timeout=30, check=True)
    body = json.loads(out.stdout)["data"]
    assert body["filepath"] == str(dest) and body["size"] == 17
    assert {r["status"] for r in results(server.api, body["uuid"]).values()} == {"success"}
    assert dest.read_text() == "pushed with curl\n" and stat.S_IMODE(dest.stat().st_mode) == 0o744


def test_openapi(fleet: tuple[Server, Path]) -> None:
    server, _ = fleet
    op = server.api.get("/openapi.json").json()["paths"]["/api/v1/files"]["post"]
    assert op["x-rport-permission"] == "uploads"
    schema = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["upload", "dest"] and schema["properties"]["upload"]["format"] == "binary"
    assert {"200", "400", "413"} <= set(op["responses"])


# -- the protected-path rules themselves ----------------------------------------------------------


@pytest.mark.parametrize("pattern, path, expected", [
    ("/lib*", "/lib64", True), ("/lib*", "/lib", True), ("/lib*", "/lib/x", False),
    ("/usr/bin", "/usr/bin", True), ("/usr/bin", "/usr/bin2", False),
    ("/etc/*.conf", "/etc/a.conf", True), ("/etc/*.conf", "/etc/x/a.conf", False),
    ("/etc/?", "/etc/a", True), ("/data/[abc]", "/data/b", True), ("/data/[!abc]", "/data/b", False),
])
def test_glob_semantics_are_go_filepath_match(pattern: str, path: str, expected: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is expected


def test_a_protected_folder_covers_everything_below_it(tmp_path: Path) -> None:
    protected, problems = compile_protected(["/usr/bin", "/lib*", "/etc/ssh/"])
    assert problems == []
    assert protected_by("/usr/bin/x", protected) == ("/usr/bin", "/usr/bin")
    assert protected_by("/usr/bin/a/b/x", protected)[1] == "/usr/bin"
    assert protected_by("/lib/modules/x", protected)[1] == "/lib*"
    assert protected_by("/etc/ssh/sshd_config", protected)[1] == "/etc/ssh/"
    assert protected_by("/etc/bin/x", protected) is None
    (tmp_path / "link").symlink_to("/usr/bin")
    assert protected_by(str(tmp_path / "link" / "x"), protected)[1] == "/usr/bin"
    assert compile_protected(["/data/[abc"])[1] == [
        "file-reception.protected: invalid glob pattern '/data/[abc': unclosed ["]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_files_of_unfinished_uploads_are_removed_at_start(make_server: Any) -> None:
    server = make_server(start=False)
    leftover = server.data_dir / "filepush"
    leftover.mkdir(parents=True, mode=0o700)
    server.data_dir.chmod(0o700)
    (leftover / "0f3c_rport_filepush").write_bytes(b"half a file")
    (leftover / ".abc.part").write_bytes(b"half a request")
    server.start()
    assert list(leftover.iterdir()) == []
    assert f"removed 2 file(s) of unfinished uploads from {leftover}" in server.log()
