// Formatting of API values for people.

export function dateTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function bytes(value) {
  if (typeof value !== "number" || value <= 0) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = value;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// Go durations in nanoseconds (a tunnel's auto_close) as "1h30m".
export function nanoseconds(value) {
  if (!value) return "—";
  let s = Math.round(value / 1e9);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${h ? h + "h" : ""}${m ? m + "m" : ""}${s || (!h && !m) ? s + "s" : ""}`;
}

export function list(values) {
  if (!values || !values.length) return "—";
  return values.join(", ");
}

export function labelsOf(labels) {
  return Object.entries(labels || {}).map(([k, v]) => `${k}: ${v}`);
}

// A host for a URL or an ssh command: IPv6 addresses in brackets.
export function urlHost(host) {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

export function plural(n, word, many = word + "s") {
  return `${n} ${n === 1 ? word : many}`;
}

// "a, b c\nd" -> ["a", "b", "c", "d"]
export function splitList(text, separators = /[\s,]+/) {
  return String(text || "").split(separators).map((s) => s.trim()).filter(Boolean);
}
