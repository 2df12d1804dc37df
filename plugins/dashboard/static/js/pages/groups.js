// Client groups: the list, one group with its members, and (administrators) creating, editing
// and deleting them with wildcard patterns (/client-groups).
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { api, enc } from "../api.js";
import { usePoll } from "../live.js";
import { href, navigate } from "../router.js";
import { list, plural, splitList } from "../format.js";
import { useApp } from "../context.js";
import { Errors, Loading, PageTitle, usePageTitle } from "../ui.js";

const PARAMS = [
  ["client_id", "Client ID"], ["name", "Name"], ["hostname", "Host name"], ["os", "OS (uname)"],
  ["os_family", "OS family"], ["os_kernel", "Kernel"], ["os_arch", "Architecture"], ["ipv4", "IPv4 address"],
  ["ipv6", "IPv6 address"], ["address", "Connected from"], ["version", "Agent version"],
  ["client_auth_id", "Credential (auth id)"], ["connection_state", "Connection state"], ["labels", "Labels (key: value)"],
];

function patternsText(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value) && !value.length) return "[]";
  return value.join(", ");
}

function parsePatterns(text) {
  const t = text.trim();
  if (!t) return null;
  if (t === "[]") return [];
  return splitList(t, /\s*,\s*/);
}

function tagText(tag) {
  if (!tag) return { text: "", op: "or" };
  if (Array.isArray(tag)) return { text: patternsText(tag), op: "or" };
  const op = Object.keys(tag)[0] || "or";
  return { text: patternsText(tag[op]), op: op.toLowerCase() };
}

export function describeParams(params) {
  const parts = [];
  for (const [key, label] of [...PARAMS, ["tag", "Tags"]]) {
    const value = params && params[key];
    if (value === null || value === undefined) continue;
    if (key === "tag" && !Array.isArray(value)) {
      const op = Object.keys(value)[0];
      parts.push(`${label}: ${value[op].join(op.toLowerCase() === "and" ? " and " : " or ")}`);
    } else {
      parts.push(`${label}: ${value.length ? value.join(" or ") : "none"}`);
    }
  }
  return parts.length ? parts : ["no parameters (matches no client)"];
}

export function GroupsPage({ query }) {
  usePageTitle("Client groups");
  const { user } = useApp();
  const creating = query.get("new") === "1";
  const [res, reload] = usePoll((signal) => api.get("/client-groups", { "page[limit]": 500 }, { signal }), []);
  return html`<${PageTitle}>Client groups<//>
    <p class="lead">A group holds every client whose attributes match its patterns (<code>*</code> is a
      wildcard); members follow the clients as they change.</p>
    ${user.isAdmin && !creating ? html`<p><a class="button primary" href="#/groups?new=1">New group</a></p>` : null}
    ${creating ? html`<${GroupForm} onDone=${(id) => navigate(id ? href(["groups", id]) : "#/groups")} />` : null}
    <${Errors} error=${res.error} />
    ${res.data ? html`<${GroupTable} groups=${res.data.data} />` : html`<${Loading} what="Loading groups" />`}`;
}

function GroupTable({ groups }) {
  if (!groups.length) return html`<p class="empty">No client groups.</p>`;
  return html`<div class="table-wrap"><table class="groups">
    <caption class="visually-hidden">Client groups</caption>
    <thead><tr><th scope="col">ID</th><th scope="col">Description</th><th scope="col">Patterns</th>
      <th scope="col">Members</th><th scope="col">Allowed user groups</th></tr></thead>
    <tbody>${groups.map((g) => html`<tr key=${g.id} data-group-id=${g.id}>
      <td><a href=${href(["groups", g.id])}>${g.id}</a></td>
      <td>${g.description || html`<span class="muted">—</span>`}</td>
      <td><ul class="plain">${describeParams(g.params).map((p) => html`<li>${p}</li>`)}</ul></td>
      <td>${plural(g.num_clients, "client")}, ${g.num_clients_connected} connected</td>
      <td>${list(g.allowed_user_groups)}</td>
    </tr>`)}</tbody>
  </table></div>`;
}

export function GroupPage({ groupId }) {
  const { user } = useApp();
  usePageTitle(`Group ${groupId}`);
  const [editing, setEditing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState(null);
  const [res, reload] = usePoll((signal) => api.get(`/client-groups/${enc(groupId)}`, null, { signal }), [groupId],
    { enabled: !editing });
  const group = res.data && res.data.data;
  const remove = async () => {
    try {
      await api.del(`/client-groups/${enc(groupId)}`);
      navigate("#/groups");
    } catch (exc) {
      setError(exc);
    }
  };
  const crumbs = html`<p class="crumbs"><a href="#/groups">Client groups</a> /</p>`;
  if (!group) {
    return html`${crumbs}<${PageTitle}>Group ${groupId}<//>
      ${res.error ? html`<${Errors} error=${res.error} />` : html`<${Loading} what="Loading the group" />`}`;
  }
  return html`${crumbs}<${PageTitle}>Group ${group.id}<//>
    <${Errors} error=${res.error || error} />
    ${editing ? html`<${GroupForm} group=${group} onDone=${() => { setEditing(false); reload(); }} />` : html`
      <dl class="facts compact">
        <div><dt>Description</dt><dd>${group.description || "—"}</dd></div>
        <div><dt>Patterns</dt><dd><ul class="plain">${describeParams(group.params).map((p) => html`<li>${p}</li>`)}</ul></dd></div>
        <div><dt>Allowed user groups</dt><dd>${list(group.allowed_user_groups)}</dd></div>
      </dl>
      ${user.isAdmin ? html`<div class="actions">
        <button type="button" onClick=${() => setEditing(true)}>Edit</button>
        ${confirming ? html`<span role="group" aria-label="Confirm deletion">Delete group ${group.id}?
            <button type="button" class="danger" onClick=${remove}>Delete</button>
            <button type="button" onClick=${() => setConfirming(false)}>Keep it</button></span>`
          : html`<button type="button" class="danger" onClick=${() => setConfirming(true)}>Delete…</button>`}
      </div>` : null}`}
    <section aria-labelledby="members-title">
      <h2 id="members-title">Members: ${plural(group.num_clients, "client")}, ${group.num_clients_connected} connected</h2>
      ${group.client_ids.length ? html`<ul class="members">${group.client_ids.map((id) => html`<li>
        <a href=${href(["clients", id])}>${id}</a></li>`)}</ul>` : html`<p class="empty">No client matches.</p>`}
      ${group.client_ids.length ? html`<p><a href=${href(["clients"], { group: group.id })}>Show them in the clients table</a></p>` : null}
    </section>`;
}

function GroupForm({ group, onDone }) {
  const creating = !group;
  const initialTag = tagText(group && group.params.tag);
  const [form, setForm] = useState(() => {
    const values = { id: group ? group.id : "", description: group ? group.description : "",
      allowed: group ? (group.allowed_user_groups || []).join(", ") : "", tag: initialTag.text, tagOp: initialTag.op };
    for (const [key] of PARAMS) values[key] = patternsText(group && group.params[key]);
    return values;
  });
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.value });
  const submit = async (event) => {
    event.preventDefault();
    const params = {};
    for (const [key] of PARAMS) {
      const value = parsePatterns(form[key]);
      if (value !== null) params[key] = value;
    }
    const tags = parsePatterns(form.tag);
    if (tags !== null) params.tag = { [form.tagOp]: tags };
    const body = { description: form.description, params, allowed_user_groups: splitList(form.allowed, /\s*,\s*/) };
    setBusy(true);
    try {
      if (creating) await api.post("/client-groups", { id: form.id.trim(), ...body });
      else await api.put(`/client-groups/${enc(group.id)}`, body);
      onDone(creating ? form.id.trim() : group.id);
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };
  return html`<form class="card group-form" onSubmit=${submit} aria-labelledby="group-form-title">
    <h2 id="group-form-title">${creating ? "New client group" : `Edit group ${group.id}`}</h2>
    <div class="row">
      ${creating ? html`<div class="field"><label for="g-id">ID</label>
        <input id="g-id" required value=${form.id} onInput=${set("id")}
          aria-describedby="g-id-hint" />
        <small id="g-id-hint" class="hint">Letters, digits, <code>_ - *</code>; at most 30.</small></div>` : null}
      <div class="field grow"><label for="g-description">Description</label>
        <input id="g-description" value=${form.description} onInput=${set("description")} /></div>
    </div>
    <fieldset><legend>Patterns</legend>
      <p class="hint">Comma-separated; <code>*</code> matches anything; a client must match every filled-in
        attribute (any of its patterns). <code>[]</code>: clients without a value.</p>
      <div class="grid">
        ${PARAMS.map(([key, label]) => html`<div class="field"><label for=${"g-" + key}>${label}</label>
          <input id=${"g-" + key} value=${form[key]} onInput=${set(key)} spellcheck=${false} /></div>`)}
        <div class="field"><label for="g-tag">Tags</label>
          <input id="g-tag" value=${form.tag} onInput=${set("tag")} spellcheck=${false} /></div>
        <div class="field"><label for="g-tag-op">Clients with</label>
          <select id="g-tag-op" value=${form.tagOp} onChange=${set("tagOp")}>
            <option value="or">any of these tags</option><option value="and">all of these tags</option>
          </select></div>
      </div>
    </fieldset>
    <div class="field"><label for="g-allowed">Allowed user groups</label>
      <input id="g-allowed" value=${form.allowed} onInput=${set("allowed")} aria-describedby="g-allowed-hint" />
      <small id="g-allowed-hint" class="hint">Users of these groups may see and use the group's clients.</small></div>
    <${Errors} error=${error} title="The group was not saved" />
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>${creating ? "Create" : "Save"}</button>
      <button type="button" onClick=${() => onDone(creating ? "" : group.id)}>Cancel</button>
    </div>
  </form>`;
}
