// One client: every fact the API has about it, its tunnels (open, close, reach) and its jobs
// (run a command, follow its output, the history).
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api, enc } from "../api.js";
import { usePoll } from "../live.js";
import { href, navigate } from "../router.js";
import { bytes, dateTime, labelsOf, list } from "../format.js";
import { Chips, Errors, JobStatus, Loading, PageTitle, StateBadge, usePageTitle } from "../ui.js";
import { TunnelForm, TunnelTable } from "./tunnels.js";
import { CommandFields, commandBody, emptyCommand } from "./commands.js";

const chips = (kind) => (v) => html`<${Chips} values=${v} kind=${kind} />`;
const FACTS = [
  ["id", "ID", (v) => html`<code>${v}</code>`],
  ["name", "Name"],
  ["connection_state", "Connection", (v) => html`<${StateBadge} state=${v} />`],
  ["disconnected_at", "Disconnected at", dateTime],
  ["address", "Connected from"],
  ["hostname", "Host name"],
  ["os_full_name", "Operating system"],
  ["os", "OS (uname)"],
  ["os_family", "OS family"],
  ["os_version", "OS version"],
  ["os_kernel", "Kernel"],
  ["os_arch", "Architecture"],
  ["os_virtualization_system", "Virtualization"],
  ["os_virtualization_role", "Virtualization role"],
  ["cpu_vendor", "CPU vendor"],
  ["cpu_model_name", "CPU"],
  ["cpu_family", "CPU family"],
  ["cpu_model", "CPU model"],
  ["num_cpus", "CPUs"],
  ["mem_total", "Memory", (v) => (typeof v === "number" && v > 0 ? `${bytes(v)} (${v} bytes)` : "—")],
  ["timezone", "Time zone"],
  ["ipv4", "IPv4 addresses", list],
  ["ipv6", "IPv6 addresses", list],
  ["tags", "Tags", chips("tag")],
  ["labels", "Labels", (v) => html`<${Chips} values=${labelsOf(v)} kind="label" />`],
  ["groups", "Client groups", (v) => (v && v.length
    ? html`<ul class="chips">${v.map((g) => html`<li class="chip chip-group"><a href=${href(["groups", g])}>${g}</a></li>`)}</ul>`
    : "—")],
  ["version", "Agent version"],
  ["client_auth_id", "Credential (auth id)"],
  ["allowed_user_groups", "Allowed user groups", (v) => (v === null || v === undefined ? "not set" : list(v))],
  ["last_heartbeat_at", "Last heartbeat", dateTime],
];
const SHOWN = new Set([...FACTS.map(([k]) => k), "tunnels"]);

function show(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return html`<code>${JSON.stringify(value)}</code>`;
  return String(value);
}

export function ClientPage({ clientId }) {
  const [res, reload] = usePoll((signal) => api.get(`/clients/${enc(clientId)}`, null, { signal }), [clientId]);
  const client = res.data && res.data.data;
  usePageTitle(client ? client.name || client.id : clientId);
  if (!client) {
    return html`<${PageTitle}>Client ${clientId}<//>
      ${res.error ? html`<${Errors} error=${res.error} />` : html`<${Loading} what="Loading the client" />`}`;
  }
  const extra = Object.keys(client).filter((k) => !SHOWN.has(k));
  const connected = client.connection_state === "connected";
  return html`<p class="crumbs"><a href="#/clients">Clients</a> /</p>
    <${PageTitle}>${client.name || client.id} <${StateBadge} state=${client.connection_state} /><//>
    <${Errors} error=${res.error} />
    <section aria-labelledby="facts-title" class="card">
      <h2 id="facts-title">System</h2>
      <dl class="facts">
        ${FACTS.map(([key, label, fmt]) => html`<div data-fact=${key}><dt>${label}</dt>
          <dd>${fmt ? fmt(client[key]) : show(client[key])}</dd></div>`)}
        ${extra.map((key) => html`<div data-fact=${key}><dt>${key}</dt><dd>${show(client[key])}</dd></div>`)}
      </dl>
    </section>
    <section aria-labelledby="tunnels-title">
      <h2 id="tunnels-title">Tunnels</h2>
      <${TunnelTable} tunnels=${client.tunnels || []} clientId=${client.id} onChanged=${reload} />
      ${connected ? html`<${TunnelForm} clientId=${client.id} onCreated=${reload} />`
        : html`<p class="muted">The client is disconnected: tunnels can be opened once it is back.</p>`}
    </section>
    <section aria-labelledby="run-title">
      <h2 id="run-title">Run a command</h2>
      ${connected ? html`<${RunCommand} clientId=${client.id} />`
        : html`<p class="muted">The client is disconnected: commands run on connected clients only.</p>`}
    </section>
    <section aria-labelledby="jobs-title">
      <h2 id="jobs-title">Jobs</h2>
      <${ClientJobs} clientId=${client.id} />
    </section>`;
}

function RunCommand({ clientId }) {
  const [form, setForm] = useState(emptyCommand);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    try {
      const resp = await api.post(`/clients/${enc(clientId)}/commands`, commandBody(form));
      navigate(href(["clients", clientId, "jobs", resp.data.jid]));
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="run-title">
    <${CommandFields} form=${form} setForm=${setForm} idPrefix="c" />
    <${Errors} error=${error} title="The command did not start" />
    <button type="submit" class="primary" disabled=${busy}>${busy ? "Starting…" : "Run"}</button>
  </form>`;
}

const JOB_FIELDS = "jid,status,command,started_at,finished_at,created_by,multi_job_id,error";

function ClientJobs({ clientId }) {
  const [res] = usePoll((signal) => api.get(`/clients/${enc(clientId)}/commands`,
    { "fields[jobs]": JOB_FIELDS, sort: "-started_at", "page[limit]": 25 }, { signal }), [clientId]);
  if (!res.data) return res.error ? html`<${Errors} error=${res.error} />` : html`<${Loading} what="Loading jobs" />`;
  const jobs = res.data.data;
  if (!jobs.length) return html`<p class="empty">No jobs yet.</p>`;
  return html`<${Errors} error=${res.error} />
    <div class="table-wrap"><table class="jobs">
    <caption class="visually-hidden">Jobs of this client, newest first (${res.data.meta.count} in all)</caption>
    <thead><tr><th scope="col">Status</th><th scope="col">Command</th><th scope="col">Started</th>
      <th scope="col">Finished</th><th scope="col">By</th><th scope="col">Part of</th></tr></thead>
    <tbody>${jobs.map((j) => html`<tr key=${j.jid}>
      <td><${JobStatus} status=${j.status} /></td>
      <td><a href=${href(["clients", clientId, "jobs", j.jid])}><code>${j.command}</code></a></td>
      <td>${dateTime(j.started_at)}</td>
      <td>${dateTime(j.finished_at)}</td>
      <td>${j.created_by}</td>
      <td>${j.multi_job_id ? html`<a href=${href(["commands", j.multi_job_id])}>multi-client job</a>` : "—"}</td>
    </tr>`)}</tbody>
  </table></div>`;
}
