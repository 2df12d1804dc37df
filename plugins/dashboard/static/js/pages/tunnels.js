// Tunnels: the list of all tunnels (GET /tunnels), a client's tunnels with a form to open one
// (PUT /clients/{id}/tunnels), closing (DELETE .../tunnels/{id}), and how to reach each one.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api, enc } from "../api.js";
import { usePoll } from "../live.js";
import { href } from "../router.js";
import { dateTime, nanoseconds, urlHost } from "../format.js";
import { useApp } from "../context.js";
import { CopyField, Errors, Loading, PageTitle, usePageTitle } from "../ui.js";

const ANY_ADDRESS = new Set(["", "0.0.0.0", "::", "[::]"]);

// The host a user reaches a tunnel at: in a cluster the host of the node that listens (the
// tunnel says), else [server] tunnel_host, else the host this page came from when the tunnel
// listens on every address, else the address it listens on.
export function tunnelHost(tunnel, status) {
  if (tunnel.tunnel_host && !ANY_ADDRESS.has(tunnel.tunnel_host)) {
    return tunnel.tunnel_host.replace(/^\[|\]$/g, "");
  }
  if (status && status.tunnel_host) return status.tunnel_host;
  if (ANY_ADDRESS.has(tunnel.lhost)) return location.hostname.replace(/^\[|\]$/g, "");
  return tunnel.lhost.replace(/^\[|\]$/g, "");
}

// What to copy to use a tunnel: a URL, an ssh command line or host:port.
export function accessOf(tunnel, status) {
  const host = tunnelHost(tunnel, status);
  const scheme = (tunnel.scheme || "").toLowerCase();
  if (tunnel.http_proxy) return `https://${urlHost(host)}:${tunnel.lport}`;
  if (scheme === "ssh" || (!scheme && tunnel.rport === "22")) return `ssh -p ${tunnel.lport} ${host}`;
  if (scheme === "http" || scheme === "https") return `${scheme}://${urlHost(host)}:${tunnel.lport}`;
  return `${urlHost(host)}:${tunnel.lport}`;
}

export function TunnelsPage() {
  usePageTitle("Tunnels");
  const [res, reload] = usePoll((signal) => api.get("/tunnels", null, { signal }), []);
  return html`<${PageTitle}>Tunnels<//>
    <p class="lead">Every open tunnel of the connected clients you may use. Open one from
      a${" "}<a href="#/clients">client's page</a>.</p>
    <${Errors} error=${res.error} />
    ${res.data ? html`<${TunnelTable} tunnels=${res.data.data} showClient=${true} onChanged=${reload} />`
      : html`<${Loading} what="Loading tunnels" />`}`;
}

export function TunnelTable({ tunnels, showClient = false, clientId, onChanged }) {
  const { status } = useApp();
  if (!tunnels.length) return html`<p class="empty">No open tunnels.</p>`;
  return html`<div class="table-wrap"><table class="tunnels">
    <caption class="visually-hidden">Open tunnels</caption>
    <thead><tr>
      ${showClient ? html`<th scope="col">Client</th>` : null}
      <th scope="col">ID</th>
      <th scope="col">Local</th>
      <th scope="col">Remote</th>
      <th scope="col">Options</th>
      <th scope="col">Access</th>
      <th scope="col">Owner, created</th>
      <th scope="col"><span class="visually-hidden">Actions</span></th>
    </tr></thead>
    <tbody>
      ${tunnels.map((t) => html`<tr key=${(t.client_id || clientId) + "/" + t.id}
          data-tunnel-id=${t.id} data-client-id=${t.client_id || clientId}>
        ${showClient ? html`<td><a href=${href(["clients", t.client_id])}>${t.client_id}</a></td>` : null}
        <td>${t.id}${t.name ? html` <span class="muted">${t.name}</span>` : null}</td>
        <td><code>${t.lhost}:${t.lport}</code>${t.lport_random ? html` <span class="muted">(random)</span>` : null}</td>
        <td><code>${t.rhost}:${t.rport}</code>${t.scheme ? html` <span class="muted">${t.scheme}</span>` : null}</td>
        <td><${TunnelOptions} tunnel=${t} /></td>
        <td><${CopyField} value=${accessOf(t, status)} label=${"access to tunnel " + t.id} /></td>
        <td>${t.owner}<br /><span class="muted">${dateTime(t.created_at)}</span></td>
        <td><${CloseTunnel} clientId=${t.client_id || clientId} tunnel=${t} onClosed=${onChanged} /></td>
      </tr>`)}
    </tbody>
  </table></div>`;
}

function TunnelOptions({ tunnel: t }) {
  const items = [];
  if (t.http_proxy) items.push(`HTTPS proxy${t.host_header ? `, Host: ${t.host_header}` : ""}${t.auth_user ? ", basic auth" : ""}`);
  items.push(t.acl ? `ACL ${t.acl}` : "open to all");
  items.push(t.idle_timeout_minutes ? `idle timeout ${t.idle_timeout_minutes} min` : "no idle timeout");
  if (t.auto_close) items.push(`auto-close ${nanoseconds(t.auto_close)}`);
  return html`<ul class="plain">${items.map((i) => html`<li>${i}</li>`)}</ul>`;
}

function CloseTunnel({ clientId, tunnel, onClosed }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const close = async (force) => {
    setBusy(true);
    try {
      await api.del(`/clients/${enc(clientId)}/tunnels/${enc(tunnel.id)}`, force ? { force: 1 } : null);
      setError(null);
      onClosed && onClosed();
    } catch (exc) {
      setError(exc);
    }
    setBusy(false);
  };
  const busyConnections = error && error.code === "ERR_CODE_TUNNEL_HAS_CONNECTIONS";
  return html`<div class="actions">
    <button type="button" class="danger" disabled=${busy} onClick=${() => close(false)}
      aria-label=${`Close tunnel ${tunnel.id} of ${clientId}`}>Close</button>
    <${Errors} error=${error} />
    ${busyConnections ? html`<button type="button" class="danger" onClick=${() => close(true)}>
      Close anyway, cutting the connections</button>` : null}
  </div>`;
}

// The form of PUT /clients/{id}/tunnels: every option is a query parameter.
export function TunnelForm({ clientId, onCreated }) {
  const { status } = useApp();
  const proxyEnabled = Boolean(status && status.tunnel_proxy_enabled);
  const [form, setForm] = useState({
    remote: "", local: "", scheme: "", acl: "", idle: "5", skipIdle: false, autoClose: "",
    proxy: false, hostHeader: "", authUser: "", authPassword: "", checkPort: true, name: "",
  });
  const [error, setError] = useState(null);
  const [created, setCreated] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.type === "checkbox" ? e.target.checked : e.target.value });

  const submit = async (event) => {
    event.preventDefault();
    const query = { remote: form.remote.trim(), local: form.local.trim(), scheme: form.scheme.trim(),
      acl: form.acl.replace(/\s+/g, ""), name: form.name.trim(), "auto-close": form.autoClose.trim(),
      check_port: form.checkPort ? "1" : "0" };
    if (form.skipIdle) query["skip-idle-timeout"] = "1";
    else if (form.idle.trim() !== "") query["idle-timeout-minutes"] = form.idle.trim();
    if (form.proxy) {
      query.http_proxy = "1";
      query.host_header = form.hostHeader.trim();
      query.auth_user = form.authUser;
      query.auth_password = form.authPassword;
    }
    setBusy(true);
    try {
      const resp = await api.put(`/clients/${enc(clientId)}/tunnels`, undefined, { query });
      setError(null);
      setCreated(resp.data);
      onCreated && onCreated(resp.data);
    } catch (exc) {
      setError(exc);
      setCreated(null);
    }
    setBusy(false);
  };

  return html`<form class="card tunnel-form" onSubmit=${submit} aria-labelledby="tunnel-form-title">
    <h3 id="tunnel-form-title">Open a tunnel</h3>
    <div class="row">
      <div class="field">
        <label for="t-remote">Remote (host:port or port)</label>
        <input id="t-remote" required value=${form.remote} onInput=${set("remote")} placeholder="127.0.0.1:22"
          aria-describedby="t-remote-hint" />
        <small id="t-remote-hint" class="hint">Where the client connects: itself (a port) or a host it can reach.</small>
      </div>
      <div class="field">
        <label for="t-local">Local port</label>
        <input id="t-local" value=${form.local} onInput=${set("local")} placeholder="random" inputmode="numeric"
          aria-describedby="t-local-hint" />
        <small id="t-local-hint" class="hint">Port (or host:port) on the server; empty: a random free port.</small>
      </div>
      <div class="field">
        <label for="t-scheme">Scheme</label>
        <input id="t-scheme" value=${form.scheme} onInput=${set("scheme")} list="t-schemes" maxlength="15" />
        <datalist id="t-schemes"><option value="ssh" /><option value="http" /><option value="https" />
          <option value="rdp" /><option value="vnc" /></datalist>
      </div>
      <div class="field">
        <label for="t-name">Name</label>
        <input id="t-name" value=${form.name} onInput=${set("name")} />
      </div>
    </div>
    <div class="row">
      <div class="field grow">
        <label for="t-acl">Allowed addresses (ACL)</label>
        <input id="t-acl" value=${form.acl} onInput=${set("acl")} placeholder="203.0.113.7, 198.51.100.0/24"
          aria-describedby="t-acl-hint" />
        <small id="t-acl-hint" class="hint">IPv4/IPv6 addresses or networks, comma-separated; empty: anyone.</small>
      </div>
      <div class="field">
        <label for="t-idle">Idle timeout (minutes)</label>
        <input id="t-idle" type="number" min="0" max="10080" value=${form.idle} onInput=${set("idle")}
          disabled=${form.skipIdle} />
      </div>
      <div class="field check">
        <input id="t-skip-idle" type="checkbox" checked=${form.skipIdle} onChange=${set("skipIdle")} />
        <label for="t-skip-idle">Never close when idle</label>
      </div>
      <div class="field">
        <label for="t-auto-close">Auto-close after</label>
        <input id="t-auto-close" value=${form.autoClose} onInput=${set("autoClose")} placeholder="e.g. 30m, 2h"
          aria-describedby="t-auto-close-hint" />
        <small id="t-auto-close-hint" class="hint">Closed this long after opening, in use or not.</small>
      </div>
      <div class="field check">
        <input id="t-check" type="checkbox" checked=${form.checkPort} onChange=${set("checkPort")} />
        <label for="t-check">Check that the remote port answers</label>
      </div>
    </div>
    <fieldset class="proxy">
      <legend>HTTPS proxy</legend>
      <div class="field check">
        <input id="t-proxy" type="checkbox" checked=${form.proxy} onChange=${set("proxy")}
          disabled=${!proxyEnabled} aria-describedby="t-proxy-hint" />
        <label for="t-proxy">Serve through the HTTPS proxy</label>
        <small id="t-proxy-hint" class="hint">${proxyEnabled
          ? "The server's certificate in front of an HTTP or HTTPS target (scheme http or https)."
          : "Not available: the server has no tunnel_proxy_cert_file and tunnel_proxy_key_file."}</small>
      </div>
      ${form.proxy ? html`<div class="row">
        <div class="field"><label for="t-host-header">Host header</label>
          <input id="t-host-header" value=${form.hostHeader} onInput=${set("hostHeader")} placeholder="intranet.example.com" /></div>
        <div class="field"><label for="t-auth-user">Basic auth user</label>
          <input id="t-auth-user" value=${form.authUser} onInput=${set("authUser")} autocomplete="off" /></div>
        <div class="field"><label for="t-auth-password">Basic auth password</label>
          <input id="t-auth-password" type="password" value=${form.authPassword} onInput=${set("authPassword")}
            autocomplete="new-password" /></div>
      </div>` : null}
    </fieldset>
    <${Errors} error=${error} title="The tunnel was not opened" />
    <button type="submit" class="primary" disabled=${busy}>${busy ? "Opening…" : "Open the tunnel"}</button>
    ${created ? html`<div class="notice" role="status">
      <p>Tunnel ${created.id} is open: <code>${created.lhost}:${created.lport}</code> → <code>${created.rhost}:${created.rport}</code>.</p>
      <${CopyField} value=${accessOf(created, status)} label=${"access to the new tunnel " + created.id} />
    </div>` : null}
  </form>`;
}
