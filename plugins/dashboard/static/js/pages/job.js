// Jobs: one job on one client (its output followed live, cancel) and multi-client jobs (every
// client's job, a progress bar, cancel all).
import { useEffect, useState } from "preact/hooks";
import { html } from "../html.js";
import { api, enc } from "../api.js";
import { followJob, usePoll } from "../live.js";
import { REFRESH_MS } from "../settings.js";
import { href } from "../router.js";
import { dateTime, plural } from "../format.js";
import { Errors, JobStatus, Loading, PageTitle, usePageTitle } from "../ui.js";

const FINAL = new Set(["successful", "failed", "unknown", "cancelled", "skipped"]);
// A running job page asks again every second; the live output comes through its stream.
const FAST_MS = REFRESH_MS > 0 ? Math.min(REFRESH_MS, 1000) : 0;
// Browsers open at most 6 HTTP/1.1 connections to a server: streams of more running jobs than
// this at once would starve the other requests. The others show their output when they end.
const MAX_STREAMS = 3;
const MAX_OUTPUT = 1 << 20; // characters of each output kept while following

function keepTail(text) {
  return text.length > MAX_OUTPUT ? text.slice(text.length - MAX_OUTPUT) : text;
}

// {total, done, counts: {status: n}, finished} of a multi-client job (target_client_ids are the
// clients it runs on; the ones without a job yet are "waiting").
export function progressOf(multi) {
  const jobs = multi.jobs || [];
  const targets = multi.target_client_ids || null;
  const counts = { running: 0, successful: 0, failed: 0, unknown: 0, cancelled: 0, skipped: 0, waiting: 0 };
  for (const job of jobs) {
    const status = job.status === "queued" ? "waiting" : job.status; // not sent yet
    counts[status] = (counts[status] || 0) + 1;
  }
  const total = targets ? Math.max(targets.length, jobs.length) : jobs.length;
  counts.waiting += Math.max(0, total - jobs.length);
  const done = jobs.filter((j) => FINAL.has(j.status)).length;
  return { total, done, counts, finished: done === total && (targets !== null || total > 0) };
}

// A job's output: the stored result, or (while it runs and `follow` is set) its live stream.
function useOutput(job, follow, onFinal) {
  const [live, setLive] = useState(null);
  const running = job.status === "running";
  useEffect(() => {
    if (!follow || !running) return undefined;
    const controller = new AbortController();
    let out = { stdout: "", stderr: "", final: null };
    const path = `/clients/${enc(job.client_id)}/commands/${enc(job.jid)}/stream`;
    followJob(path, (name, data) => {
      if (name === "job") out = { stdout: data.result.stdout, stderr: data.result.stderr, final: null };
      else if (name === "stdout" || name === "stderr") out = { ...out, [name]: keepTail(out[name] + data) };
      else if (name === "status") out = { stdout: data.result.stdout, stderr: data.result.stderr, final: data };
      setLive(out);
      if (name === "status" && onFinal) onFinal(data);
    }, controller.signal).catch(() => {});
    return () => controller.abort();
  }, [job.jid, follow, running]);
  if (live && live.final) return { ...live.final.result, job: live.final, live: false };
  if (running && live) return { stdout: live.stdout, stderr: live.stderr, job, live: true };
  return { ...job.result, job, live: false };
}

export function JobPanel({ job, follow, heading, onChanged }) {
  const out = useOutput(job, follow, onChanged);
  const shown = out.job;
  const [error, setError] = useState(null);
  const cancel = async () => {
    try {
      await api.post(`/clients/${enc(job.client_id)}/commands/${enc(job.jid)}/cancel`);
      setError(null);
      onChanged && onChanged();
    } catch (exc) {
      setError(exc);
    }
  };
  const id = `job-${job.jid}`;
  const cancellable = shown.status === "running" || shown.status === "unknown";
  return html`<article class="card job" aria-labelledby=${id + "-title"} data-client-id=${job.client_id}
      data-status=${shown.status}>
    <header class="job-head">
      <h3 id=${id + "-title"}>${heading || html`<code>${job.command}</code>`}</h3>
      <${JobStatus} status=${shown.status} />
      ${out.live ? html`<span class="live-note">following live</span>` : null}
      ${cancellable ? html`<button type="button" class="danger" onClick=${cancel}
        aria-label=${"Cancel the job on " + (job.client_name || job.client_id)}>Cancel</button>` : null}
    </header>
    <p class="job-meta">${shown.started_at ? `started ${dateTime(shown.started_at)}`
        : shown.status === "running" ? "starting" : "not started"}
      ${shown.finished_at ? `, finished ${dateTime(shown.finished_at)}` : ""}
      ${shown.pid ? `, pid ${shown.pid}` : ""}</p>
    ${shown.error ? html`<p class="job-error">${shown.error}</p>` : null}
    <${Errors} error=${error} />
    ${out.stdout || out.live || !out.stderr ? html`<h4 id=${id + "-out"}>Output</h4>
      ${out.stdout || out.live ? html`<pre class="output" tabindex="0" aria-labelledby=${id + "-out"}
        data-stream="stdout">${out.stdout || ""}</pre>` : html`<p class="muted" data-stream="stdout">No output.</p>`}` : null}
    ${out.stderr ? html`<h4 id=${id + "-err"}>Errors</h4>
      <pre class="output stderr" tabindex="0" aria-labelledby=${id + "-err"} data-stream="stderr">${out.stderr}</pre>` : null}
  </article>`;
}

export function JobPage({ clientId, jid }) {
  const [done, setDone] = useState(false);
  const [res, reload] = usePoll((signal) => api.get(`/clients/${enc(clientId)}/commands/${enc(jid)}`, null, { signal }),
    [clientId, jid], { interval: done ? 0 : FAST_MS });
  const job = res.data && res.data.data;
  useEffect(() => {
    if (job && FINAL.has(job.status) && job.status !== "unknown") setDone(true);
  }, [job && job.status]);
  usePageTitle(`Job on ${clientId}`);
  return html`<p class="crumbs"><a href="#/clients">Clients</a> / <a href=${href(["clients", clientId])}>${clientId}</a> /</p>
    <${PageTitle}>Job on ${job ? job.client_name || clientId : clientId}<//>
    <${Errors} error=${res.error} />
    ${job ? html`
      <p>Command <code>${job.command}</code> by ${job.created_by}${job.multi_job_id
        ? html`, part of a <a href=${href(["commands", job.multi_job_id])}>multi-client job</a>` : ""}.</p>
      <${JobPanel} job=${job} follow=${true} heading="Result" onChanged=${reload} />`
      : res.error ? null : html`<${Loading} what="Loading the job" />`}`;
}

export function MultiJobPage({ jid }) {
  const [done, setDone] = useState(false);
  const [res, reload] = usePoll((signal) => api.get(`/commands/${enc(jid)}`, null, { signal }), [jid],
    { interval: done ? 0 : FAST_MS });
  const [error, setError] = useState(null);
  const multi = res.data && res.data.data;
  const progress = multi ? progressOf(multi) : null;
  useEffect(() => {
    if (progress && progress.finished && !progress.counts.unknown) setDone(true);
  }, [progress && progress.finished]);
  usePageTitle("Multi-client job");
  if (!multi) {
    return html`<p class="crumbs"><a href="#/commands">Commands</a> /</p><${PageTitle}>Multi-client job<//>
      ${res.error ? html`<${Errors} error=${res.error} />` : html`<${Loading} what="Loading the job" />`}`;
  }
  const cancel = async () => {
    try {
      await api.post(`/commands/${enc(jid)}/cancel`);
      setError(null);
    } catch (exc) {
      setError(exc);
    }
    reload();
  };
  const jobs = multi.jobs || [];
  const seen = new Set(jobs.map((j) => j.client_id));
  const waiting = (multi.target_client_ids || []).filter((id) => !seen.has(id));
  const streamed = new Set(jobs.filter((j) => j.status === "running").slice(0, MAX_STREAMS).map((j) => j.jid));
  const pct = progress.total ? Math.round((100 * progress.done) / progress.total) : 0;
  return html`<p class="crumbs"><a href="#/commands">Commands</a> /</p>
    <${PageTitle}>Multi-client job<//>
    <${Errors} error=${res.error} />
    <dl class="facts compact">
      <div><dt>Command</dt><dd><code>${multi.command}</code></dd></div>
      <div><dt>Started</dt><dd>${dateTime(multi.started_at)} by ${multi.created_by}</dd></div>
      <div><dt>Targets</dt><dd>${targetText(multi)}</dd></div>
      <div><dt>Execution</dt><dd>${multi.concurrent ? "all at once" : "one after another"}${
        multi.concurrent ? "" : multi.abort_on_err ? ", stopping at the first failure" : ", going on after failures"}</dd></div>
    </dl>
    <div class="progress-box">
      <label for="multi-progress">Progress</label>
      <progress id="multi-progress" max=${progress.total || 1} value=${progress.done}>${pct}%</progress>
      <p role="status" class="progress-text">${progress.done} of ${plural(progress.total, "client")} finished${
        progress.finished ? " — done" : ""}</p>
      <${ProgressSummary} progress=${progress} />
      ${!progress.finished ? html`<button type="button" class="danger" onClick=${cancel}>Cancel the job</button>` : null}
      <${Errors} error=${error} />
    </div>
    <section aria-label="Jobs by client" class="jobs-list">
      ${jobs.map((job) => html`<${JobPanel} key=${job.jid} job=${job} follow=${streamed.has(job.jid)} onChanged=${reload}
        heading=${html`<a href=${href(["clients", job.client_id])}>${job.client_name || job.client_id}</a>${" "}<span
          class="muted">${job.client_id}</span>`} />`)}
      ${waiting.map((id) => html`<article class="card job" data-client-id=${id} data-status="waiting">
        <header class="job-head"><h3><a href=${href(["clients", id])}>${id}</a></h3><${JobStatus} status="waiting" /></header>
      </article>`)}
    </section>`;
}

function targetText(multi) {
  const parts = [];
  if (multi.client_ids && multi.client_ids.length) parts.push(`clients ${multi.client_ids.join(", ")}`);
  if (multi.group_ids && multi.group_ids.length) parts.push(`groups ${multi.group_ids.join(", ")}`);
  if (multi.tags) parts.push(`tags ${(multi.tags.tags || []).join(multi.tags.operator === "AND" ? " and " : " or ")}`);
  if (multi.labels) parts.push(`labels ${(multi.labels.labels || []).join(multi.labels.operator === "AND" ? " and " : " or ")}`);
  const resolved = multi.target_client_ids ? ` (${plural(multi.target_client_ids.length, "client")})` : "";
  return (parts.join("; ") || "—") + resolved;
}

export function ProgressSummary({ progress }) {
  const parts = Object.entries(progress.counts).filter(([, n]) => n);
  return html`<span class="progress-summary">${parts.map(([status, n]) => html`<span class="count">
    <${JobStatus} status=${status} /> ${n}</span>`)}</span>`;
}
