// Live updates by polling the API, and the live output of a job (server-sent events read with
// fetch, since EventSource cannot send the Authorization header).
//
// Polls run one at a time per view (the next one is scheduled when the previous answer has
// arrived) and pause while the tab is hidden or the user has been inactive for
// settings.idle_pause_seconds: an unattended dashboard then stops using its session, which
// expires like any other API session.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { send } from "./api.js";
import { REFRESH_MS, settings } from "./settings.js";

const IDLE_MS = settings.idle_pause_seconds > 0 ? settings.idle_pause_seconds * 1000 : Infinity;
let lastActivity = Date.now();
const waiting = new Set();

function active() {
  return document.visibilityState === "visible" && Date.now() - lastActivity < IDLE_MS;
}

function wake() {
  if (!active()) return;
  const fns = [...waiting];
  waiting.clear();
  for (const fn of fns) fn();
}

function touch() {
  lastActivity = Date.now();
  wake();
}

for (const type of ["pointerdown", "keydown", "wheel", "touchstart", "pointermove"]) {
  addEventListener(type, touch, { passive: true, capture: true });
}
document.addEventListener("visibilitychange", wake);

export function livePaused() {
  return !active();
}

// Load `load(signal)` now and again every `interval` ms while live; `deps` restart it.
// Returns [{data, error, loading}, reload].
export function usePoll(load, deps, { interval = REFRESH_MS, enabled = true } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const reloadRef = useRef(() => {});
  useEffect(() => {
    if (!enabled) return undefined;
    let stopped = false;
    let timer = null;
    let controller = null;
    let running = false;
    let again = false;
    setState((s) => ({ ...s, loading: true }));
    const run = async () => {
      if (stopped) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      clearTimeout(timer);
      waiting.delete(tick);
      controller = new AbortController();
      try {
        const data = await load(controller.signal);
        if (!stopped) setState({ data, error: null, loading: false });
      } catch (exc) {
        if (!stopped && exc.name !== "AbortError") setState((s) => ({ ...s, error: exc, loading: false }));
      }
      running = false;
      if (again) {
        again = false;
        run();
      } else if (!stopped && interval > 0) {
        timer = setTimeout(tick, interval);
      }
    };
    const tick = () => {
      if (stopped) return;
      if (active()) run();
      else waiting.add(tick);
    };
    reloadRef.current = run;
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
      waiting.delete(tick);
      if (controller) controller.abort();
    };
  }, [...deps, interval, enabled]);
  const reload = useCallback(() => reloadRef.current(), []);
  return [state, reload];
}

// Parse a text/event-stream body: calls onEvent(name, data) for each event with JSON data.
export async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// Follow a job's output: GET /clients/{id}/commands/{jid}/stream until its final status.
export async function followJob(path, onEvent, signal) {
  const resp = await send("GET", path, { signal, accept: "text/event-stream" });
  await readEvents(resp, onEvent);
}
