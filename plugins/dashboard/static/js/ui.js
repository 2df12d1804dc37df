// Shared pieces of the interface.
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "./html.js";
import { describe } from "./api.js";

// API errors as the API words them, one line per problem, announced to screen readers.
export function Errors({ error, title }) {
  if (!error) return null;
  const items = error.errors || [{ title: String(error.message || error), detail: "" }];
  return html`<div class="errors" role="alert">
    ${title ? html`<p class="errors-title">${title}</p>` : null}
    <ul>${items.map((item) => html`<li>${describe(item)}</li>`)}</ul>
  </div>`;
}

export function StateBadge({ state }) {
  return html`<span class=${"badge state-" + state}>${state}</span>`;
}

const JOB_CLASSES = {
  running: "running", successful: "ok", failed: "bad", unknown: "warn", cancelled: "warn",
  skipped: "muted", waiting: "muted",
};

// A multi-client job's job that has not been sent yet is "queued" in the API: "waiting" here,
// as a targeted client without a job.
export function JobStatus({ status }) {
  const shown = status === "queued" ? "waiting" : status;
  return html`<span class=${"badge job-" + (JOB_CLASSES[shown] || "muted")}>${shown}</span>`;
}

export function Chips({ values, kind = "tag" }) {
  if (!values || !values.length) return html`<span class="muted">—</span>`;
  return html`<ul class="chips">
    ${values.map((v) => html`<li class=${"chip chip-" + kind}>${v}</li>`)}
  </ul>`;
}

// A read-only text (a command, a URL) with a button that copies it.
export function CopyField({ value, label }) {
  const input = useRef(null);
  const [note, setNote] = useState("");
  useEffect(() => {
    if (!note) return undefined;
    const t = setTimeout(() => setNote(""), 2500);
    return () => clearTimeout(t);
  }, [note]);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      setNote("Copied");
    } catch {
      input.current.focus();
      input.current.select();
      setNote("Selected: press Ctrl+C to copy");
    }
  };
  return html`<span class="copy">
    <input ref=${input} class="copy-text" readonly value=${value} aria-label=${label}
      size=${Math.min(Math.max(value.length, 10), 60)} onFocus=${(e) => e.target.select()} />
    <button type="button" onClick=${copy} aria-label=${"Copy " + label}>Copy</button>
    <span class="copy-note" role="status">${note}</span>
  </span>`;
}

export function Field({ label, hint, children, id }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children}
    ${hint ? html`<small id=${id + "-hint"} class="hint">${hint}</small>` : null}
  </div>`;
}

export function Loading({ what = "Loading" }) {
  return html`<p class="loading" role="status">${what}…</p>`;
}

// Page heading that takes the focus when a page opens (screen readers announce the new page).
export function PageTitle({ children }) {
  const ref = useRef(null);
  useEffect(() => {
    if (ref.current) ref.current.focus({ preventScroll: true });
  }, []);
  return html`<h1 tabindex="-1" ref=${ref}>${children}</h1>`;
}

export function usePageTitle(title) {
  useEffect(() => {
    document.title = title ? `${title} · rport dashboard` : "rport dashboard";
  }, [title]);
}
