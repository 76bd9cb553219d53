"""Bodies of 8 MiB and more bypass aiohttp's parser (read off the socket into aligned buffers).

These check that every byte still arrives in order whatever the chunk sizes and offsets,
that the connection is closed after such a request (the parser lost track of it), and
that failures leave nothing visible.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import time

import httpx

from tests.conftest import Server
from tests.ocihelp import sha256
from tests.registry.test_api import blob_files

MIB = 1 << 20


def test_large_monolithic_and_chunked_uploads_keep_every_byte(client: httpx.Client) -> None:
    data = secrets.token_bytes(20 * MIB + 123)
    digest = sha256(data)
    loc = client.post("/v2/large/mono/blobs/uploads/").headers["Location"]
    r = client.put(loc, params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    assert r.headers["Connection"] == "close"
    assert client.get(f"/v2/large/mono/blobs/{digest}").content == data

    # POST with ?digest= and a body: the one-request push.
    data2 = secrets.token_bytes(9 * MIB + 1)
    r = client.post("/v2/large/post/blobs/uploads/", params={"digest": sha256(data2)}, content=data2)
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/large/post/blobs/{sha256(data2)}").content == data2

    # Chunks whose boundaries are not page-aligned (the second starts mid-page).
    data3 = secrets.token_bytes(27 * MIB + 4321)
    cuts = [0, 9 * MIB + 5, 18 * MIB + 77, len(data3)]
    loc = client.post("/v2/large/chunked/blobs/uploads/").headers["Location"]
    for start, end in itertools.pairwise(cuts[:-1]):
        r = client.patch(
            loc,
            content=data3[start:end],
            headers={"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{end - 1}"
        loc = r.headers["Location"]
    r = client.put(
        loc,
        params={"digest": sha256(data3)},
        content=data3[cuts[-2] :],
        headers={"Content-Range": f"{cuts[-2]}-{len(data3) - 1}"},
    )
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/large/chunked/blobs/{sha256(data3)}").content == data3


def test_large_body_with_wrong_digest_stores_nothing(client: httpx.Client, server: Server) -> None:
    before = blob_files(server)
    data = secrets.token_bytes(10 * MIB)
    wrong = sha256(b"not this")
    r = client.post("/v2/large/bad/blobs/uploads/", params={"digest": wrong}, content=data)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert r.headers["Connection"] == "close"
    assert client.head(f"/v2/large/bad/blobs/{sha256(data)}").status_code == 404
    assert blob_files(server) == before
    # The next request (on a new connection) is served normally.
    assert client.get("/v2/").status_code == 200


def test_client_vanishing_mid_large_body_leaves_nothing(client: httpx.Client, server: Server) -> None:
    data = secrets.token_bytes(16 * MIB)
    digest = sha256(data)
    head = (
        f"POST /v2/large/gone/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {server.host}\r\n"
        f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(head + data[: 10 * MIB])
    s.close()
    time.sleep(0.5)
    assert client.head(f"/v2/large/gone/blobs/{digest}").status_code == 404
    assert not list((server.data_dir / "blobs" / "blobs").glob(f"sha256/*/{digest.split(':')[1]}"))
    # The same push completed properly afterwards works.
    r = client.post("/v2/large/gone/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert client.get(f"/v2/large/gone/blobs/{digest}").content == data
