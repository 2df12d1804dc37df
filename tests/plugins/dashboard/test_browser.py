"""The dashboard end to end: Debian's chromium (Playwright) against a real rportd with real agents,
real targets behind the tunnels and real commands. Each test logs in through the page as a user
would and checks what the page shows against what the API and the targets say.

Waits are Playwright's (an element appears, a text changes) or polled conditions, never sleeps.
Screenshots of each page are saved as test artefacts (conftest.shot).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ...procs import Agent, Server, running, wait_for
from ...targets import HttpFileServer, can_listen
from ...web_targets import Pki, WebTarget, headers_of
from .conftest import login, session_token, shot, write_users

expect = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is missing").expect

HELLO = "served through an rport tunnel\n"
OPEN_COMMANDS = {"allow": [".*"], "deny": []}
AGENTS = {
    "alpha": {"name": "Alpha box", "tags": ["Linux", "Office Berlin"], "labels": {"city": "Berlin"}},
    "beta": {"name": "Beta box", "tags": ["Linux", "Datacenter 1"], "labels": {"city": "Cologne", "zone": "EU"}},
    "gamma": {"name": "Gamma box", "tags": ["Windows"], "labels": {"city": "Berlin"}},
}


class Fleet:
    def __init__(self, server: Server, root: Path, pki: Pki, www: HttpFileServer, web: WebTarget) -> None:
        self.server, self.root, self.pki, self.www, self.web = server, root, pki, www, web
        self.base = server.api_url
        assert server.api is not None
        self.api: httpx.Client = server.api

    def agent(self, client_id: str, **client: Any) -> Agent:
        return Agent(self.root / f"agent-{client_id}", self.server, client_id,
                     config={"client": client, "remote-commands": OPEN_COMMANDS})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """rportd with API users admin (Administrators) and bob (Users), the HTTPS tunnel proxy,
    three agents, an HTTP file server and a web target that echoes headers; bob may use beta."""
    root: Path = tmp_path_factory.mktemp("dashboard")
    pki = Pki(root / "pki")
    users = write_users(root / "users.json", [
        {"username": "admin", "password": "foobaz", "groups": ["Administrators"]},
        {"username": "bob", "password": "bobpass", "groups": ["Users"]}])
    server = Server(root / "server", extra={
        "api": {"auth_file": str(users)},
        "server": {"tunnel_proxy_cert_file": str(pki.cert_file), "tunnel_proxy_key_file": str(pki.key_file)},
        "plugins.dashboard": {"refresh_interval": "1s"}})
    del server.config["api"]["auth"]
    server.start()
    www_root = root / "www"
    www_root.mkdir()
    (www_root / "hello.txt").write_text(HELLO)
    with HttpFileServer(www_root) as www, WebTarget() as web:
        fleet = Fleet(server, root, pki, www, web)
        agents = [fleet.agent(cid, **spec) for cid, spec in AGENTS.items()]
        with running(server, agents):
            resp = fleet.api.post("/clients/beta/acl", json={"allowed_user_groups": ["Users"]})
            assert resp.status_code == 204, resp.text
            yield fleet


@pytest.fixture
def admin(fleet: Fleet, new_page: Callable[..., Any]) -> Any:
    page = new_page()
    login(page, fleet.base, "admin", "foobaz")
    return page


def rows(page: Any) -> list[str]:
    """The client ids of the clients table, in order."""
    return page.locator("table.clients tbody tr").evaluate_all("rows => rows.map(r => r.dataset.clientId)")


def expect_rows(page: Any, ids: list[str]) -> None:
    """Wait until the clients table shows these clients, in this order, and no newer answer is
    awaited (the old rows stay on screen, marked busy, until it comes)."""
    def shown() -> bool:
        table = page.locator("table.clients")
        return (table.count() == 1 and table.get_attribute("aria-busy") == "false"
                and rows(page) == ids)
    wait_for(shown, 20, f"the clients table to show {ids}", interval=0.05)


def nav(page: Any, name: str) -> Any:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def close_all_tunnels(fleet: Fleet) -> None:
    for tunnel in fleet.api.get("/tunnels").json()["data"]:
        fleet.api.delete(f"/clients/{tunnel['client_id']}/tunnels/{tunnel['id']}", params={"force": 1})


# -- 1. login, logout, the session --------------------------------------------------------------


def test_login_shows_the_apis_error_and_logout_ends_the_session(fleet: Fleet, new_page: Callable[..., Any]) -> None:
    page = new_page()
    page.goto(fleet.base + "/")
    expect(page.get_by_role("heading", name="rport dashboard")).to_be_visible()
    shot(page, "login")
    # keyboard only: type, Tab to the password, Enter submits
    page.get_by_label("User name").focus()
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type("wrong")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("unauthorized: invalid username or password")  # the API's words
    shot(page, "login-failed")
    assert session_token(page) == ""
    page.get_by_label("Password").fill("foobaz")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("username")).to_have_text("admin")
    token = session_token(page)
    assert token and page.context.cookies() == []  # a Bearer token in this tab, no cookie
    me = httpx.get(fleet.base + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["data"]["username"] == "admin"

    page.reload()  # the tab keeps its session
    expect(page.get_by_test_id("username")).to_have_text("admin")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_have_text("You have logged out.")
    assert session_token(page) == ""
    gone = httpx.get(fleet.base + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 401  # DELETE /logout ended the session on the server


def test_the_session_expires_like_the_apis(make_server: Callable[..., Server], new_page: Callable[..., Any]) -> None:
    """With token_lifetime 1s and updates every 2s the session expires between two updates:
    the next one gets the API's 401 and the page asks for a new login, saying why."""
    server = make_server("expiry", extra={"plugins.auth_jwt": {"token_lifetime": "1s"},
                                          "plugins.dashboard": {"refresh_interval": "2s"}})
    page = new_page()
    login(page, server.api_url, "admin", "foobaz")
    status = page.get_by_role("status")
    expect(status).to_contain_text("Your session has ended (unauthorized: token expired)", timeout=30_000)
    expect(page.get_by_label("Password")).to_be_visible()
    assert session_token(page) == ""
    shot(page, "session-expired")


def test_updates_pause_while_the_user_is_away_so_the_session_expires(
        make_server: Callable[..., Server], new_page: Callable[..., Any]) -> None:
    """An open dashboard stops asking the API after idle_pause without input; its session then
    expires (token_lifetime), and the first input afterwards brings the login form back."""
    server = make_server("idle", extra={"plugins.auth_jwt": {"token_lifetime": "2s"},
                                        "plugins.dashboard": {"refresh_interval": "1s", "idle_pause": "1s"}})
    page = new_page()
    asked: list[float] = []
    page.on("request", lambda r: asked.append(time.monotonic()) if "/api/v1/" in r.url else None)
    login(page, server.api_url, "admin", "foobaz")
    quiet = 3.0  # longer than token_lifetime: the session has expired once the page was this quiet
    wait_for(lambda: asked and time.monotonic() - asked[-1] > quiet, 30, "the page to stop asking the API")
    expect(page.get_by_test_id("username")).to_have_text("admin")  # nothing noticed yet
    page.mouse.move(200, 200)  # the user is back: updates resume at once
    expect(page.get_by_role("status")).to_contain_text("Your session has ended (unauthorized: token expired)")


# -- 2. clients -----------------------------------------------------------------------------------


def test_clients_table_search_filters_sorting(fleet: Fleet, admin: Any) -> None:
    page = admin
    expect_rows(page, ["alpha", "beta", "gamma"])  # by name
    row = page.locator("tr[data-client-id=beta]")
    for text in ("connected", "Beta box", "beta", "127.0.0.1", "Datacenter 1", "city: Cologne", "zone: EU"):
        expect(row).to_contain_text(text)
    expect(page.get_by_role("status").filter(has_text="Showing")).to_have_text("Showing 1–3 of 3 clients")
    shot(page, "clients")

    page.get_by_label("Tag").select_option("Office Berlin")
    expect_rows(page, ["alpha"])
    assert "tag=Office%20Berlin" in page.url or "tag=Office+Berlin" in page.url
    page.get_by_label("Tag").select_option("")
    expect_rows(page, ["alpha", "beta", "gamma"])
    page.get_by_label("Search").fill("gam")
    expect_rows(page, ["gamma"])
    page.get_by_label("Search").fill("alpha, beta")
    expect_rows(page, ["alpha", "beta"])
    page.get_by_label("Search").fill("")
    expect_rows(page, ["alpha", "beta", "gamma"])
    page.get_by_role("button", name="Name").click()  # already ascending: now descending
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Name")
    expect_rows(page, ["gamma", "beta", "alpha"])
    page.get_by_label("Connection").select_option("disconnected")
    expect(page.get_by_text("No client matches.")).to_be_visible()
    page.go_back()  # filters live in the URL: back restores the previous view
    expect_rows(page, ["gamma", "beta", "alpha"])


def test_client_page_shows_every_fact(fleet: Fleet, admin: Any) -> None:
    page = admin
    page.get_by_role("link", name="Beta box").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Beta box")
    doc = fleet.api.get("/clients/beta").json()["data"]
    facts = page.locator("dl.facts")
    for key, value in doc.items():
        if key == "tunnels":
            continue
        fact = facts.locator(f"[data-fact={key}]")
        expect(fact).to_have_count(1)
        if isinstance(value, str) and value and key not in ("disconnected_at",):
            expect(fact).to_contain_text(value)
    expect(facts.locator("[data-fact=ipv4]")).to_contain_text(", ".join(doc["ipv4"]) or "—")
    expect(facts.locator("[data-fact=num_cpus]")).to_contain_text(str(doc["num_cpus"]))
    expect(facts.locator("[data-fact=mem_total]")).to_contain_text(f"({doc['mem_total']} bytes)")
    expect(page.get_by_role("heading", name="Tunnels")).to_be_visible()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    shot(page, "client")


def test_live_updates_as_clients_connect_and_disconnect(fleet: Fleet, admin: Any) -> None:
    page = admin
    expect(page.locator("table.clients tbody tr")).to_have_count(3)
    counts = page.locator(".counts")
    expect(counts).to_contain_text("3 clients connected, 0 disconnected")
    agent = fleet.agent("delta", name="Delta box", tags=["Linux"])
    try:
        row = page.locator("tr[data-client-id=delta]")
        expect(row).to_contain_text("connected")  # no reload: the page asks the API again
        expect(counts).to_contain_text("4 clients connected")
        agent.stop()
        expect(row.locator(".badge")).to_have_text("disconnected")
        expect(counts).to_contain_text("3 clients connected, 1 disconnected")
    finally:
        agent.stop()
        fleet.api.delete("/clients/delta")
    expect(page.locator("tr[data-client-id=delta]")).to_have_count(0)


# -- 3. tunnels -------------------------------------------------------------------------------------


def test_open_a_tunnel_fetch_through_it_and_close_it(fleet: Fleet, admin: Any) -> None:
    close_all_tunnels(fleet)
    page = admin
    page.goto(fleet.base + "/#/clients/alpha")
    form = page.locator("form.tunnel-form")
    form.get_by_label("Remote (host:port or port)").fill(f"127.0.0.1:{fleet.www.port}")
    form.get_by_label("Allowed addresses (ACL)").fill("127.0.0.1, ::1")
    form.get_by_label("Idle timeout (minutes)").fill("7")
    form.get_by_label("Auto-close after").fill("1h")
    form.get_by_role("button", name="Open the tunnel").click()
    notice = form.locator(".notice")
    expect(notice).to_contain_text("is open")
    access = notice.get_by_role("textbox").input_value()
    match = re.fullmatch(r"127\.0\.0\.1:(\d+)", access)
    assert match, access
    lport = int(match.group(1))
    assert httpx.get(f"http://{access}/hello.txt").text == HELLO  # a real fetch through the tunnel
    tunnel, = fleet.api.get("/clients/alpha").json()["data"]["tunnels"]
    assert (tunnel["lport"], tunnel["acl"], tunnel["idle_timeout_minutes"], tunnel["auto_close"]) == (
        str(lport), "127.0.0.1,::1", 7, 3600 * 10**9)
    row = page.locator(f"table.tunnels tr[data-tunnel-id='{tunnel['id']}']")
    expect(row).to_contain_text(f"0.0.0.0:{lport}")
    expect(row).to_contain_text("ACL 127.0.0.1,::1")
    expect(row).to_contain_text("auto-close 1h")
    shot(page, "client-tunnel")

    # the same again: the API's refusal, as it words it
    form.get_by_role("button", name="Open the tunnel").click()
    expect(form.get_by_role("alert")).to_contain_text("Tunnel already exists.")

    # an ssh tunnel shows a command line to copy
    form.get_by_label("Remote (host:port or port)").fill(f"127.0.0.1:{fleet.web.port}")
    form.get_by_label("Allowed addresses (ACL)").fill("")
    form.get_by_label("Scheme").fill("ssh")
    form.get_by_label("Local port").fill("")
    form.get_by_role("button", name="Open the tunnel").click()
    expect(notice).to_contain_text(f"127.0.0.1:{fleet.web.port}")
    ssh = notice.get_by_role("textbox").input_value()
    assert re.fullmatch(r"ssh -p \d+ 127\.0\.0\.1", ssh), ssh
    notice.get_by_role("button", name=re.compile("^Copy")).click()
    expect(notice.locator(".copy-note")).not_to_be_empty()

    nav(page, "Tunnels").click()
    table = page.locator("table.tunnels")
    expect(table.locator("tbody tr")).to_have_count(2)
    shot(page, "tunnels")
    table.get_by_role("button", name=f"Close tunnel {tunnel['id']} of alpha").click()
    expect(table.locator("tbody tr")).to_have_count(1)
    wait_for(lambda: can_listen("127.0.0.1", lport), what="the tunnel's port to be free")
    assert [t["rport"] for t in fleet.api.get("/tunnels").json()["data"]] == [str(fleet.web.port)]
    close_all_tunnels(fleet)
    expect(page.get_by_text("No open tunnels.")).to_be_visible()


def test_open_an_https_proxy_tunnel_with_a_host_header(fleet: Fleet, admin: Any) -> None:
    close_all_tunnels(fleet)
    page = admin
    page.goto(fleet.base + "/#/clients/beta")
    form = page.locator("form.tunnel-form")
    form.get_by_label("Remote (host:port or port)").fill(f"127.0.0.1:{fleet.web.port}")
    form.get_by_label("Scheme").fill("http")
    form.get_by_label("Serve through the HTTPS proxy").check()
    form.get_by_label("Host header").fill("intranet.example.com")
    form.get_by_role("button", name="Open the tunnel").click()
    notice = form.locator(".notice")
    expect(notice).to_contain_text("is open")
    url = notice.get_by_role("textbox").input_value()
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", url), url
    echoed = httpx.get(url + "/echo-headers", verify=fleet.pki.client_context()).json()
    assert headers_of(echoed)["host"] == ["intranet.example.com"], echoed
    tunnel, = fleet.api.get("/clients/beta").json()["data"]["tunnels"]
    assert tunnel["http_proxy"] is True and tunnel["host_header"] == "intranet.example.com"
    expect(page.locator("table.tunnels")).to_contain_text("HTTPS proxy, Host: intranet.example.com")
    shot(page, "tunnel-proxy")
    close_all_tunnels(fleet)


# -- 4. commands ----------------------------------------------------------------------------------


def test_multi_client_command_with_live_output(fleet: Fleet, admin: Any, tmp_path: Path) -> None:
    """Pick two clients in the table, run a command on both at once, watch each one's output
    arrive while it runs, with the progress bar, then the history."""
    page = admin
    go = tmp_path / "go"
    page.get_by_label("Select Alpha box").check()
    page.get_by_label("Select Beta box").check()
    expect(page.get_by_role("region", name="Selected clients")).to_contain_text("2 clients selected")
    page.get_by_role("link", name="Run a command on them").click()
    expect(page.get_by_label("Client IDs")).to_have_value("alpha\nbeta")
    script = "echo tick 1 on $(hostname)\nwhile [ ! -e go ]; do sleep 0.05; done\necho tick 2\n"
    page.get_by_label("Command", exact=True).fill(script)
    page.get_by_label("Working directory").fill(str(tmp_path))  # where "go" appears
    page.get_by_label("All clients at once").check()
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("heading", name="Multi-client job")).to_be_visible()
    jid = page.url.rsplit("/", 1)[1]
    progress = page.locator(".progress-text")
    expect(progress).to_have_text("0 of 2 clients finished")
    for client_id in ("alpha", "beta"):
        job = page.locator(f"article.job[data-client-id={client_id}]")
        expect(job.locator(".badge")).to_have_text("running")
        expect(job.locator("pre[data-stream=stdout]")).to_contain_text("tick 1 on")  # live, while it runs
    assert {j["status"] for j in fleet.api.get(f"/commands/{jid}").json()["data"]["jobs"]} == {"running"}
    shot(page, "command-running")
    go.touch()
    expect(progress).to_have_text("2 of 2 clients finished — done")
    for client_id in ("alpha", "beta"):
        job = page.locator(f"article.job[data-client-id={client_id}]")
        expect(job.locator(".badge")).to_have_text("successful")
        expect(job.locator("pre[data-stream=stdout]")).to_contain_text("tick 2")
    expect(page.locator("progress")).to_have_attribute("value", "2")
    shot(page, "command-done")

    nav(page, "Commands").click()
    history = page.locator("table.history")
    expect(history).to_contain_text("tick 1 on")
    expect(history.locator("tbody tr").first).to_contain_text("2")
    shot(page, "commands")


def test_run_on_one_client_cancel_and_job_history(fleet: Fleet, admin: Any) -> None:
    page = admin
    page.goto(fleet.base + "/#/clients/gamma")
    page.get_by_label("Command", exact=True).fill("echo started; sleep 60")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("heading", name="Job on Gamma box")).to_be_visible()
    panel = page.locator("article.job")
    expect(panel.locator("pre[data-stream=stdout]")).to_contain_text("started")  # replayed, then live
    panel.get_by_role("button", name="Cancel the job on Gamma box").click()
    expect(panel.locator(".badge")).to_have_text("cancelled")
    page.get_by_role("link", name="gamma").click()
    jobs = page.locator("table.jobs")
    expect(jobs.locator("tbody tr").first).to_contain_text("cancelled")
    expect(jobs.locator("tbody tr").first).to_contain_text("sleep 60")


def test_sequential_command_by_tags_stops_when_cancelled(fleet: Fleet, admin: Any) -> None:
    page = admin
    nav(page, "Commands").click()
    page.get_by_label("Tags").check()
    page.get_by_label("Linux (2 clients)").check()
    page.get_by_label("Command", exact=True).fill("sleep 60")
    page.get_by_role("button", name="Run", exact=True).click()
    progress = page.locator(".progress-text")
    expect(progress).to_have_text("0 of 2 clients finished")
    expect(page.locator("article.job[data-client-id=alpha] .badge")).to_have_text("running")
    expect(page.locator("article.job[data-client-id=beta] .badge")).to_have_text("waiting")
    page.get_by_role("button", name="Cancel the job", exact=True).click()
    expect(progress).to_have_text("2 of 2 clients finished — done")
    expect(page.locator("article.job[data-client-id=alpha] .badge")).to_have_text("cancelled")
    beta = page.locator("article.job[data-client-id=beta]")
    expect(beta.locator(".badge")).to_have_text("skipped")
    expect(beta).to_contain_text("not run: the multi-client job was cancelled by admin")


# -- 5. client groups -----------------------------------------------------------------------------


def test_client_groups_create_edit_delete(fleet: Fleet, admin: Any) -> None:
    page = admin
    nav(page, "Client groups").click()
    page.get_by_role("link", name="New group").click()
    page.get_by_label("ID", exact=True).fill("bad id!")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid client group.: invalid group ID")
    page.get_by_label("ID", exact=True).fill("berlin")
    page.get_by_label("Description").fill("Machines in Berlin")
    page.get_by_label("Labels (key: value)").fill("city: Berlin")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Group berlin")).to_be_visible()
    members = page.locator("ul.members")
    expect(members.locator("li")).to_have_text(["alpha", "gamma"])
    group = fleet.api.get("/client-groups/berlin").json()["data"]
    assert group["params"]["labels"] == ["city: Berlin"] and group["description"] == "Machines in Berlin"
    shot(page, "group")

    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Name", exact=True).fill("Alpha*")
    page.get_by_label("Tags").fill("linux, office*")
    page.get_by_label("Clients with").select_option("and")
    page.get_by_role("button", name="Save").click()
    expect(members.locator("li")).to_have_text(["alpha"])
    group = fleet.api.get("/client-groups/berlin").json()["data"]
    assert group["params"]["name"] == ["Alpha*"] and group["params"]["tag"] == {"and": ["linux", "office*"]}

    page.get_by_role("link", name="Show them in the clients table").click()
    expect_rows(page, ["alpha"])
    nav(page, "Client groups").click()
    expect(page.locator("table.groups")).to_contain_text("Machines in Berlin")
    shot(page, "groups")
    page.get_by_role("link", name="berlin").click()
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("group", name="Confirm deletion").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No client groups.")).to_be_visible()
    assert fleet.api.get("/client-groups").json()["data"] == []


# -- 7. a user who is not an administrator ----------------------------------------------------------


def test_a_non_admin_sees_only_the_clients_the_api_gives_them(fleet: Fleet, new_page: Callable[..., Any]) -> None:
    page = new_page()
    login(page, fleet.base, "bob", "bobpass")
    expect_rows(page, ["beta"])
    expect(page.locator(".counts")).to_contain_text("connected")
    shot(page, "clients-non-admin")
    page.goto(fleet.base + "/#/clients/alpha")
    expect(page.get_by_role("alert")).to_contain_text("Access denied to client(s) with ID(s): alpha")
    nav(page, "Client groups").click()
    expect(page.get_by_role("heading", name="Client groups")).to_be_visible()
    expect(page.get_by_role("link", name="New group")).to_have_count(0)
    nav(page, "Commands").click()
    page.get_by_label("Client IDs").fill("beta alpha")
    page.get_by_label("Command", exact=True).fill("hostname")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Access denied to client(s) with ID(s): alpha")


# -- accessibility ------------------------------------------------------------------------------------

LABELS_JS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
    && !e.getAttribute('aria-labelledby') && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 120))"""


def test_every_control_has_a_label_and_pages_have_landmarks(fleet: Fleet, admin: Any) -> None:
    page = admin
    for route in ("#/clients", "#/clients/alpha", "#/tunnels", "#/commands", "#/groups", "#/groups?new=1"):
        page.goto(f"{fleet.base}/{route}")
        expect(page.locator("main h1")).to_be_visible()
        page.wait_for_load_state("networkidle")
        assert page.evaluate(LABELS_JS) == [], route
        assert page.locator("nav[aria-label=Main]").count() == 1
        assert page.locator("main h1").count() == 1, route
        assert page.evaluate("document.documentElement.lang") == "en"
    # the page heading takes the focus when a page opens (screen readers announce it)
    nav(page, "Tunnels").click()
    expect(page.locator("h1")).to_be_focused()
