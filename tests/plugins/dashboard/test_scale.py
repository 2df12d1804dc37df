"""The clients table with 10,000 clients: a real rportd that knows 10,000 (disconnected) clients
from its store and one real agent. The browser gets one page of clients at a time from the API,
so searching, filtering, sorting and paging stay usable; this test checks what the page shows,
not how fast (benchmarks/dashboard_clients.py measures that)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rport.core.clients import Client
from rport.core.store import Store

from ...procs import Agent, Server, running
from .conftest import login, shot

expect = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is missing").expect

N = 10_000


def seeded_client(i: int) -> Client:
    return Client(
        id=f"host-{i:05d}", name=f"Host {i:05d}", version="0.1.0", auth_id="user1",
        address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
        facts={"os": "Linux", "os_full_name": "Debian GNU/Linux 12" if i % 3 else "Ubuntu 24.04",
               "hostname": f"host-{i:05d}", "num_cpus": 2, "ipv4": [f"10.1.{i // 256 % 256}.{i % 256}"]},
        tags=[f"rack-{i % 20:02d}", "Linux"], labels={"dc": f"dc-{i % 4}"})


async def seed(db: Path, count: int) -> None:
    """``count`` disconnected clients in rportd's store, as a server that once had them."""
    store = Store(default_path=db)
    await store.open()
    try:
        now = time.time()
        for i in range(count):
            client = seeded_client(i)
            await store.save_client(client.id, client.to_record(), now)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("dashboard-10k")
    server = Server(root / "server", extra={"plugins.dashboard": {"refresh_interval": "2s"}})
    server.data_dir.mkdir(parents=True)
    # in a thread of its own: Playwright's synchronous API keeps an event loop running here
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, seed(server.data_dir / "rportd.db", N)).result()
    server.start()
    agent = Agent(root / "agent", server, "real-agent", args=["--name", "Real agent", "--tag", "rack-07"])
    with running(server, [agent]):
        yield server


def status_text(page: Any) -> Any:
    return page.locator(".pager-status")


def test_ten_thousand_clients(big: Server, new_page: Callable[..., Any]) -> None:
    assert big.api is not None
    assert big.api.get("/status").json()["data"]["clients_disconnected"] == N
    page = new_page()
    login(page, big.api_url, "admin", "foobaz")
    rows = page.locator("table.clients tbody tr")
    expect(status_text(page)).to_have_text(f"Showing 1–50 of {N + 1} clients (page 1 of 201)")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-client-id", "host-00000")
    shot(page, "clients-10k", full_page=False)

    page.get_by_role("button", name="Next").click()  # paging moves
    expect(status_text(page)).to_have_text(f"Showing 51–100 of {N + 1} clients (page 2 of 201)")
    expect(rows.first).to_have_attribute("data-client-id", "host-00050")
    page.get_by_role("button", name="Last").click()
    expect(status_text(page)).to_have_text(f"Showing 10001–10001 of {N + 1} clients (page 201 of 201)")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-client-id", "real-agent")  # "Real agent" sorts last

    page.get_by_label("Tag").select_option("rack-07")  # a filter narrows the count
    expect(status_text(page)).to_have_text("Showing 1–50 of 501 clients (page 1 of 11)")
    page.get_by_label("Connection").select_option("connected")
    expect(status_text(page)).to_have_text("Showing 1–1 of 1 client")
    expect(rows.first).to_have_attribute("data-client-id", "real-agent")
    page.get_by_label("Connection").select_option("")
    page.get_by_label("Tag").select_option("")

    page.get_by_label("Search").fill("host-0999")
    expect(status_text(page)).to_have_text("Showing 1–10 of 10 clients")
    page.get_by_role("button", name="Name").click()  # sorted by name already: now descending
    expect(rows.first).to_have_attribute("data-client-id", "host-09999")
    page.get_by_label("Search").fill("")
    expect(status_text(page)).to_have_text(f"Showing 1–50 of {N + 1} clients (page 1 of 201)")
    expect(rows.first).to_have_attribute("data-client-id", "real-agent")

    page.get_by_label("Per page").select_option("250")
    expect(rows).to_have_count(250)
    page.get_by_label("Select every client on this page").check()
    expect(page.get_by_role("region", name="Selected clients")).to_contain_text("250 clients selected")
