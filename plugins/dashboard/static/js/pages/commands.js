// Commands: run one command on many clients (POST /commands: by ids, groups, tags or labels,
// one after another or all at once) and the history of multi-client jobs (GET /commands).
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api, enc } from "../api.js";
import { usePoll } from "../live.js";
import { href, navigate, useRoute } from "../router.js";
import { dateTime, plural, splitList } from "../format.js";
import { useApp } from "../context.js";
import { selection } from "../selection.js";
import { Errors, Loading, PageTitle, usePageTitle } from "../ui.js";
import { ProgressSummary, progressOf } from "./job.js";

export const emptyCommand = { command: "", interpreter: "", cwd: "", timeout: "", sudo: false };

export function commandBody(form) {
  const body = { command: form.command };
  if (form.interpreter.trim()) body.interpreter = form.interpreter.trim();
  if (form.cwd.trim()) body.cwd = form.cwd.trim();
  if (String(form.timeout).trim()) body.timeout_sec = Number(form.timeout);
  if (form.sudo) body.is_sudo = true;
  return body;
}

// The fields of a command, shared by the client page and the multi-client form.
export function CommandFields({ form, setForm, idPrefix }) {
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  const id = (name) => `${idPrefix}-${name}`;
  return html`<div class="field">
      <label for=${id("command")}>Command</label>
      <textarea id=${id("command")} required rows="2" value=${form.command} onInput=${set("command")}
        spellcheck=${false} placeholder="/usr/bin/uptime" aria-describedby=${id("command-hint")}></textarea>
      <small id=${id("command-hint")} class="hint">The agent's [remote-commands] rules decide what it runs
        (by default: full paths under /usr/bin and /usr/local/bin, one command without ${"| ; & < >"}).</small>
    </div>
    <div class="row">
      <div class="field">
        <label for=${id("interpreter")}>Interpreter</label>
        <input id=${id("interpreter")} value=${form.interpreter} onInput=${set("interpreter")} list=${id("interpreters")}
          placeholder="/bin/sh" />
        <datalist id=${id("interpreters")}><option value="sh" /><option value="bash" /><option value="python3" />
          <option value="powershell" /><option value="cmd" /></datalist>
      </div>
      <div class="field">
        <label for=${id("cwd")}>Working directory</label>
        <input id=${id("cwd")} value=${form.cwd} onInput=${set("cwd")} placeholder="the agent's" />
      </div>
      <div class="field">
        <label for=${id("timeout")}>Timeout (seconds)</label>
        <input id=${id("timeout")} type="number" min="0" value=${form.timeout} onInput=${set("timeout")} placeholder="60" />
      </div>
      <div class="field check">
        <input id=${id("sudo")} type="checkbox" checked=${form.sudo} onChange=${set("sudo")} />
        <label for=${id("sudo")}>Run with sudo</label>
      </div>
    </div>`;
}

export function CommandsPage() {
  usePageTitle("Commands");
  return html`<${PageTitle}>Commands<//>
    <${MultiCommandForm} />
    <section aria-labelledby="history-title">
      <h2 id="history-title">History</h2>
      <${History} />
    </section>`;
}

const MODES = [["ids", "Clients by ID"], ["groups", "Client groups"], ["tags", "Tags"], ["labels", "Labels"]];

function MultiCommandForm() {
  const route = useRoute();
  const fromSelection = route.query.get("target") === "selected" && selection.size > 0;
  const [form, setForm] = useState(() => ({
    ...emptyCommand, mode: "ids", ids: fromSelection ? selection.ids().join("\n") : "",
    groups: [], tags: [], tagOp: "OR", labels: "", labelOp: "OR", concurrent: false, abortOnError: true,
  }));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [groups] = usePoll((signal) => api.get("/client-groups",
    { "fields[client_groups]": "id,description,num_clients,num_clients_connected", "page[limit]": 500 },
    { signal }), []);
  const [tags] = usePoll((signal) => api.get("/client-tags", { "page[limit]": 500 }, { signal }), []);
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  const toggle = (key, value) => (e) => setForm({ ...form,
    [key]: e.target.checked ? [...form[key], value] : form[key].filter((v) => v !== value) });

  const submit = async (event) => {
    event.preventDefault();
    const body = { ...commandBody(form), execute_concurrently: form.concurrent };
    if (!form.concurrent) body.abort_on_error = form.abortOnError;
    if (form.mode === "ids") body.client_ids = splitList(form.ids);
    if (form.mode === "groups") body.group_ids = form.groups;
    if (form.mode === "tags") body.tags = { operator: form.tagOp, tags: form.tags };
    if (form.mode === "labels") body.labels = { operator: form.labelOp, labels: splitList(form.labels, /\n+/) };
    setBusy(true);
    try {
      const resp = await api.post("/commands", body);
      navigate(href(["commands", resp.data.jid]));
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };

  const groupList = groups.data ? groups.data.data : [];
  const tagList = tags.data ? tags.data.data : [];
  return html`<form class="card" onSubmit=${submit} aria-labelledby="multi-title">
    <h2 id="multi-title">Run a command on many clients</h2>
    <fieldset class="targets">
      <legend>Target</legend>
      <div class="radios">
        ${MODES.map(([mode, label]) => html`<span class="radio">
          <input type="radio" id=${"mode-" + mode} name="mode" value=${mode} checked=${form.mode === mode}
            onChange=${() => setForm({ ...form, mode })} />
          <label for=${"mode-" + mode}>${label}</label></span>`)}
      </div>
      ${form.mode === "ids" ? html`<div class="field">
        <label for="m-ids">Client IDs</label>
        <textarea id="m-ids" rows="3" value=${form.ids} onInput=${set("ids")} spellcheck=${false}
          aria-describedby="m-ids-hint"></textarea>
        <small id="m-ids-hint" class="hint">Separated by spaces, commas or lines, in the order to run them.
          Or pick them in the <a href="#/clients">clients table</a>${selection.size ? ` (${selection.size} selected there)` : ""}.</small>
      </div>` : null}
      ${form.mode === "groups" ? html`<fieldset class="choices"><legend>Client groups</legend>
        ${groupList.length ? groupList.map((g) => html`<span class="check">
          <input type="checkbox" id=${"g-" + g.id} checked=${form.groups.includes(g.id)} onChange=${toggle("groups", g.id)} />
          <label for=${"g-" + g.id}>${g.id} <span class="muted">(${g.num_clients_connected} of ${plural(g.num_clients, "client")} connected)</span></label>
        </span>`) : html`<p class="muted">No client groups. <a href="#/groups">Create one</a>.</p>`}
      </fieldset>` : null}
      ${form.mode === "tags" ? html`<fieldset class="choices"><legend>Tags</legend>
        ${tagList.map((t, i) => html`<span class="check">
          <input type="checkbox" id=${"tag-" + i} checked=${form.tags.includes(t.tag)} onChange=${toggle("tags", t.tag)} />
          <label for=${"tag-" + i}>${t.tag} <span class="muted">(${plural(t.client_ids.length, "client")})</span></label>
        </span>`)}
        <div class="field"><label for="m-tag-op">Clients with</label>
          <select id="m-tag-op" value=${form.tagOp} onChange=${set("tagOp")}>
            <option value="OR">any of these tags</option><option value="AND">all of these tags</option>
          </select></div>
      </fieldset>` : null}
      ${form.mode === "labels" ? html`<div class="row">
        <div class="field grow"><label for="m-labels">Labels</label>
          <textarea id="m-labels" rows="2" value=${form.labels} onInput=${set("labels")} placeholder="city: Berlin"
            aria-describedby="m-labels-hint"></textarea>
          <small id="m-labels-hint" class="hint">One <code>key: value</code> per line.</small></div>
        <div class="field"><label for="m-label-op">Clients with</label>
          <select id="m-label-op" value=${form.labelOp} onChange=${set("labelOp")}>
            <option value="OR">any of these labels</option><option value="AND">all of these labels</option>
          </select></div>
      </div>` : null}
    </fieldset>
    <${CommandFields} form=${form} setForm=${setForm} idPrefix="m" />
    <fieldset class="execution">
      <legend>Execution</legend>
      <span class="radio"><input type="radio" id="m-seq" name="execution" checked=${!form.concurrent}
        onChange=${() => setForm({ ...form, concurrent: false })} />
        <label for="m-seq">One client after another</label></span>
      <span class="radio"><input type="radio" id="m-conc" name="execution" checked=${form.concurrent}
        onChange=${() => setForm({ ...form, concurrent: true })} />
        <label for="m-conc">All clients at once</label></span>
      <span class="check"><input type="checkbox" id="m-abort" checked=${form.abortOnError && !form.concurrent}
        disabled=${form.concurrent} onChange=${set("abortOnError")} />
        <label for="m-abort">Stop at the first failure</label></span>
    </fieldset>
    <${Errors} error=${error} title="The command did not start" />
    <button type="submit" class="primary" disabled=${busy}>${busy ? "Starting…" : "Run"}</button>
  </form>`;
}

const PAGE = 20;
const CACHE_MAX = 500;
const finished = new Map(); // jid -> multi-job with jobs, for jobs that can no longer change

function remember(multi) {
  finished.set(multi.jid, multi);
  if (finished.size > CACHE_MAX) finished.delete(finished.keys().next().value);
}

function History() {
  const { user } = useApp();
  const [page, setPage] = useState(1);
  const [res] = usePoll((signal) => api.get("/commands", null, { signal }), []);
  if (!res.data) return res.error ? html`<${Errors} error=${res.error} />` : html`<${Loading} what="Loading the history" />`;
  // Others' jobs are listed for everyone, but only administrators may open them.
  const rows = res.data.data.filter((m) => user.isAdmin || m.created_by === user.username);
  if (!rows.length) return html`<p class="empty">No multi-client jobs yet.</p>`;
  const pages = Math.ceil(rows.length / PAGE);
  const shown = rows.slice((page - 1) * PAGE, page * PAGE);
  return html`<${Errors} error=${res.error} />
    <div class="table-wrap"><table class="history">
      <caption class="visually-hidden">Multi-client jobs, newest first</caption>
      <thead><tr><th scope="col">Started</th><th scope="col">By</th><th scope="col">Command</th>
        <th scope="col">Clients</th><th scope="col">Progress</th></tr></thead>
      <tbody>${shown.map((m) => html`<${HistoryRow} key=${m.jid} summary=${m} />`)}</tbody>
    </table></div>
    ${pages > 1 ? html`<nav class="pager" aria-label="Pages of the history">
      <span>Page ${page} of ${pages}</span>
      <button type="button" onClick=${() => setPage(page - 1)} disabled=${page <= 1}>Previous</button>
      <button type="button" onClick=${() => setPage(page + 1)} disabled=${page >= pages}>Next</button>
    </nav>` : null}`;
}

function HistoryRow({ summary }) {
  const cached = finished.get(summary.jid);
  const [res] = usePoll((signal) => api.get(`/commands/${enc(summary.jid)}`, null, { signal }),
    [summary.jid], { enabled: !cached });
  const multi = cached || (res.data && res.data.data);
  const progress = multi ? progressOf(multi) : null;
  if (multi && !cached && progress.finished) remember(multi);
  return html`<tr>
    <td><a href=${href(["commands", summary.jid])}>${dateTime(summary.started_at)}</a></td>
    <td>${summary.created_by}</td>
    <td>${multi ? html`<code>${multi.command}</code>` : "…"}</td>
    <td>${progress ? progress.total : "…"}</td>
    <td>${progress ? html`<${ProgressSummary} progress=${progress} />` : res.error ? res.error.message : "…"}</td>
  </tr>`;
}
