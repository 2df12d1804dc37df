// The application: login, the layout and the pages.
import { useEffect, useState } from "preact/hooks";
import { html } from "./html.js";
import { AppContext } from "./context.js";
import { api, describe, session, setUnauthorizedHandler } from "./api.js";
import { usePoll } from "./live.js";
import { selection } from "./selection.js";
import { useRoute } from "./router.js";
import { plural } from "./format.js";
import { LoginPage } from "./pages/login.js";
import { ClientsPage } from "./pages/clients.js";
import { ClientPage } from "./pages/client.js";
import { TunnelsPage } from "./pages/tunnels.js";
import { CommandsPage } from "./pages/commands.js";
import { JobPage, MultiJobPage } from "./pages/job.js";
import { GroupPage, GroupsPage } from "./pages/groups.js";

export function App() {
  const [auth, setAuth] = useState(() => (session.token ? { phase: "checking" } : { phase: "login" }));

  useEffect(() => {
    setUnauthorizedHandler((error) => {
      session.token = "";
      selection.clear();
      setAuth({ phase: "login", message: `Your session has ended (${describe(error.errors[0])}). Please log in again.` });
    });
    if (auth.phase === "checking") {
      api.get("/me").then(
        (resp) => setAuth({ phase: "in", user: resp.data }),
        (error) => {
          if (error.status !== 401) setAuth({ phase: "login", message: error.message });
        },
      );
    }
  }, []);

  const loggedIn = async (token) => {
    session.token = token;
    const resp = await api.get("/me");
    setAuth({ phase: "in", user: resp.data });
  };
  const logout = async () => {
    try {
      await api.del("/logout");
    } catch {
      // the session may be gone already; forgetting the token is what matters
    }
    session.token = "";
    selection.clear();
    setAuth({ phase: "login", message: "You have logged out." });
  };

  if (auth.phase === "checking") return html`<p class="loading" role="status">Loading…</p>`;
  if (auth.phase === "login") return html`<${LoginPage} message=${auth.message} onLogin=${loggedIn} />`;
  return html`<${Shell} user=${auth.user} onLogout=${logout} />`;
}

const NAV = [
  ["clients", "Clients"],
  ["tunnels", "Tunnels"],
  ["commands", "Commands"],
  ["groups", "Client groups"],
];

function Shell({ user, onLogout }) {
  const route = useRoute();
  const [status, reloadStatus] = usePoll((signal) => api.get("/status", null, { signal }), []);
  const section = route.parts[0] || "clients";
  const isAdmin = (user.groups || []).includes("Administrators");
  const ctx = { user: { ...user, isAdmin }, status: status.data && status.data.data, reloadStatus };
  const counts = ctx.status;
  const skip = (event) => {
    event.preventDefault();
    document.getElementById("main").focus();
  };
  return html`<${AppContext.Provider} value=${ctx}>
    <a class="skip" href="#main" onClick=${skip}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/clients"><img src="/dashboard/img/icon.svg" alt="" width="24" height="24" /> rport</a>
      <nav aria-label="Main">
        <ul>
          ${NAV.map(([key, label]) => html`<li><a href=${"#/" + key}
            aria-current=${section === key ? "page" : undefined}>${label}</a></li>`)}
        </ul>
      </nav>
      <p class="counts" aria-live="polite">
        ${counts ? html`<span class="dot dot-connected" aria-hidden="true"></span>${plural(counts.clients_connected, "client")} connected,
          ${" "}${counts.clients_disconnected} disconnected` : null}
      </p>
      <div class="user">
        <span>Logged in as <strong data-testid="username">${user.username}</strong>${isAdmin ? "" : " (user)"}</span>
        <button type="button" onClick=${onLogout}>Log out</button>
      </div>
    </header>
    <main id="main" tabindex="-1">
      <${Page} route=${route} />
    </main>
  <//>`;
}

function Page({ route }) {
  const [section, id, sub, subId] = route.parts;
  const key = route.parts.join("/");
  switch (section || "clients") {
    case "clients":
      if (!id) return html`<${ClientsPage} query=${route.query} />`;
      if (sub === "jobs" && subId) return html`<${JobPage} key=${key} clientId=${id} jid=${subId} />`;
      return html`<${ClientPage} key=${key} clientId=${id} />`;
    case "tunnels":
      return html`<${TunnelsPage} />`;
    case "commands":
      if (id) return html`<${MultiJobPage} key=${key} jid=${id} />`;
      return html`<${CommandsPage} />`;
    case "groups":
      if (id) return html`<${GroupPage} key=${key} groupId=${id} />`;
      return html`<${GroupsPage} query=${route.query} />`;
    default:
      return html`<h1>Not found</h1><p>There is no page <code>${route.hash}</code>. <a href="#/clients">Clients</a></p>`;
  }
}
