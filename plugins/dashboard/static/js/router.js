// Routes live in the URL's #fragment (#/clients/web-1?tab=x): the server serves one page, and
// back, forward and reload work. Path segments are URI-encoded.
import { useEffect, useState } from "preact/hooks";

const listeners = new Set();

export function parseHash(hash = location.hash) {
  const text = hash.replace(/^#/, "") || "/clients";
  const [path, search = ""] = text.split("?");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, query: new URLSearchParams(search), hash: "#" + text };
}

export function href(parts, query) {
  const path = "#/" + parts.map((p) => encodeURIComponent(p)).join("/");
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const qs = search.toString();
  return qs ? `${path}?${qs}` : path;
}

function notify() {
  const route = parseHash();
  for (const fn of listeners) fn(route);
}

// Go to a route; `replace` changes the current history entry (typing in a search box).
export function navigate(target, { replace = false } = {}) {
  if (target === location.hash) return;
  if (replace) {
    history.replaceState(history.state, "", target);
    notify();
  } else {
    location.hash = target;
  }
}

addEventListener("hashchange", notify);

export function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    listeners.add(setRoute);
    return () => listeners.delete(setRoute);
  }, []);
  return route;
}
