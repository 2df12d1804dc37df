// Log in with an API user's password: POST /login, which answers with a login token.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { request } from "../api.js";
import { Errors, usePageTitle } from "../ui.js";

export function LoginPage({ message, onLogin }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  usePageTitle("Log in");

  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const resp = await request("POST", "/login", { body: { username, password }, token: "" });
      setPassword("");
      await onLogin(resp.data.token);
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };

  return html`<main id="main" class="login">
    <form class="card login-form" onSubmit=${submit} aria-labelledby="login-title" novalidate>
      <h1 id="login-title"><img src="/dashboard/img/icon.svg" alt="" width="32" height="32" /> rport dashboard</h1>
      ${message && !error ? html`<p class="notice" role="status">${message}</p>` : null}
      <${Errors} error=${error} title="Login failed" />
      <div class="field">
        <label for="login-username">User name</label>
        <input id="login-username" name="username" autocomplete="username" required
          value=${username} onInput=${(e) => setUsername(e.target.value)} autofocus />
      </div>
      <div class="field">
        <label for="login-password">Password</label>
        <input id="login-password" name="password" type="password" autocomplete="current-password" required
          value=${password} onInput=${(e) => setPassword(e.target.value)} />
      </div>
      <button type="submit" class="primary" disabled=${busy}>${busy ? "Logging in…" : "Log in"}</button>
    </form>
  </main>`;
}
