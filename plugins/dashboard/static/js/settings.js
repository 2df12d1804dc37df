// The server's settings for this page (no secret): from the data-settings attribute of <body>.
const defaults = { api: "/api/v1", refresh_seconds: 5, idle_pause_seconds: 300 };

function read() {
  try {
    return { ...defaults, ...JSON.parse(document.body.dataset.settings || "{}") };
  } catch {
    return defaults;
  }
}

export const settings = read();
export const REFRESH_MS = settings.refresh_seconds * 1000;
