// All clients: search, filters by tag, group and connection state, sorting and paging, all done
// by the API (GET /clients with filter[...], sort and page[...]), so a server with 10,000
// clients sends one page at a time and the browser renders only that page.
import { useEffect, useState } from "preact/hooks";
import { html } from "../html.js";
import { api } from "../api.js";
import { usePoll } from "../live.js";
import { REFRESH_MS } from "../settings.js";
import { href, navigate } from "../router.js";
import { labelsOf, plural } from "../format.js";
import { useSelection } from "../selection.js";
import { Chips, Errors, Loading, PageTitle, StateBadge, usePageTitle } from "../ui.js";

const FIELDS = "id,name,os_full_name,os,hostname,address,tags,labels,groups,connection_state,disconnected_at";
export const SEARCH_FILTER = "filter[id|name|hostname|address|os_full_name]";
const SIZES = [25, 50, 100, 250];
const SORTABLE = { name: "Name", id: "ID", os: "OS" };
const OPTIONS_MS = REFRESH_MS * 12;

// "web, db*" -> "*web*,db*": each comma-separated term matches anywhere unless it has a "*".
export function searchPattern(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean)
    .map((t) => (t.includes("*") ? t : `*${t}*`)).join(",");
}

function readQuery(query) {
  const size = SIZES.includes(Number(query.get("size"))) ? Number(query.get("size")) : 50;
  return {
    q: query.get("q") || "",
    tag: query.get("tag") || "",
    group: query.get("group") || "",
    state: query.get("state") || "",
    sort: query.get("sort") || "name",
    page: Math.max(1, Math.floor(Number(query.get("page"))) || 1),
    size,
  };
}

function go(current, changes) {
  const next = { ...current, ...changes };
  if (!("page" in changes)) next.page = 1;
  navigate(href(["clients"], {
    q: next.q, tag: next.tag, group: next.group, state: next.state,
    sort: next.sort === "name" ? "" : next.sort, page: next.page > 1 ? next.page : "",
    size: next.size === 50 ? "" : next.size,
  }), { replace: "q" in changes });
}

export function ClientsPage({ query }) {
  usePageTitle("Clients");
  const view = readQuery(query);
  const params = { "fields[clients]": FIELDS, sort: view.sort, "page[limit]": view.size,
    "page[offset]": (view.page - 1) * view.size };
  if (view.q) params[SEARCH_FILTER] = searchPattern(view.q);
  if (view.tag) params["filter[tags]"] = view.tag;
  if (view.group) params["filter[groups]"] = view.group;
  if (view.state) params["filter[connection_state]"] = view.state;
  const key = JSON.stringify(params);
  // Each answer remembers the view it is for: until the next one arrives, the table and the
  // counts stay those of the rows on screen (marked busy), never a mix of old rows and new page.
  const [clients] = usePoll(async (signal) => ({ ...(await api.get("/clients", params, { signal })), view, key }), [key]);
  // The choices of the filters change rarely: asked for less often than the table.
  const [tags] = usePoll((signal) => api.get("/client-tags",
    { "fields[client_tags]": "tag", "page[limit]": 500 }, { signal }), [], { interval: OPTIONS_MS });
  const [groups] = usePoll((signal) => api.get("/client-groups",
    { "fields[client_groups]": "id", "page[limit]": 500 }, { signal }), [], { interval: OPTIONS_MS });
  const rows = clients.data ? clients.data.data : [];
  const count = clients.data ? clients.data.meta.count : 0;
  const busy = !clients.data || clients.data.key !== key;
  const shown = clients.data ? clients.data.view : view;
  useEffect(() => {  // a page past the end (the filter or the fleet shrank): the last page
    if (!busy && !rows.length && count && view.page > 1) go(view, { page: Math.ceil(count / view.size) });
  }, [busy, rows.length, count]);

  return html`<${PageTitle}>Clients<//>
    <${Filters} view=${view} tags=${tags.data ? tags.data.data.map((t) => t.tag) : []}
      groups=${groups.data ? groups.data.data.map((g) => g.id) : []} />
    <${Errors} error=${clients.error} />
    <${SelectionBar} />
    ${clients.data ? html`<${Table} rows=${rows} view=${view} busy=${busy} />
      <${Pager} view=${view} shownView=${shown} count=${count} shown=${rows.length} busy=${busy} />`
      : html`<${Loading} what="Loading clients" />`}`;
}

function Filters({ view, tags, groups }) {
  const [text, setText] = useState(view.q);
  useEffect(() => setText(view.q), [view.q]);
  useEffect(() => {
    if (text === view.q) return undefined;
    const t = setTimeout(() => go(view, { q: text }), 300);
    return () => clearTimeout(t);
  }, [text]);
  const select = (key) => (e) => go(view, { [key]: e.target.value });
  return html`<form class="filters" role="search" aria-label="Filter clients" onSubmit=${(e) => {
    e.preventDefault();
    go(view, { q: text });
  }}>
    <div class="field grow">
      <label for="client-search">Search</label>
      <input id="client-search" type="search" value=${text} placeholder="name, id, host name, address or OS"
        aria-describedby="client-search-hint" onInput=${(e) => setText(e.target.value)} />
      <small id="client-search-hint" class="hint">Commas separate alternatives; <code>*</code> is a wildcard.</small>
    </div>
    <div class="field">
      <label for="client-state">Connection</label>
      <select id="client-state" value=${view.state} onChange=${select("state")}>
        <option value="">all</option>
        <option value="connected">connected</option>
        <option value="disconnected">disconnected</option>
      </select>
    </div>
    <div class="field">
      <label for="client-tag">Tag</label>
      <select id="client-tag" value=${view.tag} onChange=${select("tag")}>
        <option value="">all</option>
        ${[...new Set([...tags, view.tag].filter(Boolean))].map((t) => html`<option value=${t}>${t}</option>`)}
      </select>
    </div>
    <div class="field">
      <label for="client-group">Group</label>
      <select id="client-group" value=${view.group} onChange=${select("group")}>
        <option value="">all</option>
        ${[...new Set([...groups, view.group].filter(Boolean))].map((g) => html`<option value=${g}>${g}</option>`)}
      </select>
    </div>
  </form>`;
}

function SelectionBar() {
  const selection = useSelection();
  if (!selection.size) return null;
  return html`<div class="selection-bar" role="region" aria-label="Selected clients">
    <span>${plural(selection.size, "client")} selected</span>
    <a class="button primary" href="#/commands?target=selected">Run a command on them</a>
    <button type="button" onClick=${() => selection.clear()}>Clear the selection</button>
  </div>`;
}

function SortHeader({ field, view }) {
  const active = view.sort === field || view.sort === "-" + field;
  const descending = view.sort === "-" + field;
  const next = active && !descending ? "-" + field : field;
  return html`<th scope="col" aria-sort=${active ? (descending ? "descending" : "ascending") : "none"}>
    <button type="button" class="sort" onClick=${() => go(view, { sort: next })}>
      ${SORTABLE[field]}<span aria-hidden="true">${active ? (descending ? " ▼" : " ▲") : ""}</span>
    </button>
  </th>`;
}

function Table({ rows, view, busy }) {
  const selection = useSelection();
  if (!rows.length) return html`<p class="empty" aria-busy=${busy ? "true" : "false"}>${busy ? "Loading…" : "No client matches."}</p>`;
  const ids = rows.map((r) => r.id);
  const allOn = ids.every((id) => selection.has(id));
  return html`<div class="table-wrap"><table class="clients" aria-busy=${busy ? "true" : "false"}>
    <caption class="visually-hidden">Clients, sorted by ${view.sort.replace(/^-/, "")}</caption>
    <thead><tr>
      <th scope="col"><input type="checkbox" aria-label="Select every client on this page" checked=${allOn}
        onChange=${(e) => selection.set(ids, e.target.checked)} /></th>
      <th scope="col">State</th>
      <${SortHeader} field="name" view=${view} />
      <${SortHeader} field="id" view=${view} />
      <${SortHeader} field="os" view=${view} />
      <th scope="col">Address</th>
      <th scope="col">Tags</th>
      <th scope="col">Labels</th>
      <th scope="col">Groups</th>
    </tr></thead>
    <tbody>
      ${rows.map((c) => html`<tr key=${c.id} data-client-id=${c.id}>
        <td><input type="checkbox" aria-label=${"Select " + (c.name || c.id)} checked=${selection.has(c.id)}
          onChange=${(e) => selection.toggle(c.id, e.target.checked)} /></td>
        <td><${StateBadge} state=${c.connection_state} /></td>
        <td><a href=${href(["clients", c.id])}>${c.name || c.id}</a></td>
        <td><code>${c.id}</code></td>
        <td>${c.os_full_name && c.os_full_name !== "unknown" ? c.os_full_name : c.os}</td>
        <td>${c.address || "—"}</td>
        <td><${Chips} values=${c.tags} /></td>
        <td><${Chips} values=${labelsOf(c.labels)} kind="label" /></td>
        <td><${Chips} values=${c.groups} kind="group" /></td>
      </tr>`)}
    </tbody>
  </table></div>`;
}

function Pager({ view, shownView, count, shown, busy }) {
  const pages = Math.max(1, Math.ceil(count / shownView.size));
  const first = count ? (shownView.page - 1) * shownView.size + 1 : 0;
  const last = (shownView.page - 1) * shownView.size + shown;
  const nextPages = Math.max(1, Math.ceil(count / view.size));
  const to = (page) => () => go(view, { page });
  return html`<nav class="pager" aria-label="Pages of clients">
    <p role="status" class="pager-status">${count ? `Showing ${first}–${last} of ${plural(count, "client")}` : "No clients"}
      ${pages > 1 ? ` (page ${shownView.page} of ${pages})` : ""}${busy ? " — loading…" : ""}</p>
    <button type="button" onClick=${to(1)} disabled=${view.page <= 1}>First</button>
    <button type="button" onClick=${to(view.page - 1)} disabled=${view.page <= 1}>Previous</button>
    <button type="button" onClick=${to(view.page + 1)} disabled=${view.page >= nextPages}>Next</button>
    <button type="button" onClick=${to(nextPages)} disabled=${view.page >= nextPages}>Last</button>
    <label for="page-size">Per page</label>
    <select id="page-size" value=${view.size} onChange=${(e) => go(view, { size: Number(e.target.value) })}>
      ${SIZES.map((n) => html`<option value=${n}>${n}</option>`)}
    </select>
  </nav>`;
}
