// Log in with an API user's password: POST /login, which answers with a login token. With
// two-factor login on ([api] totp_enabled), that token is only good for the second step: the
// code of an authenticator app, sent to POST /verify-2fa for the real token; a user without a
// TOTP secret yet first creates one (POST /me/totp-secret) and scans its QR code.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { request } from "../api.js";
import { Errors, usePageTitle } from "../ui.js";

export function LoginPage({ message, onLogin }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [step, setStep] = useState(null); // {token, setup: {secret, qr} | null}: the second step
  usePageTitle(step ? "Authenticator code" : "Log in");

  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const resp = await request("POST", "/login", { body: { username, password }, token: "" });
      setPassword("");
      const twoFa = resp.data.two_fa;
      if (!twoFa) {
        await onLogin(resp.data.token);
        return;
      }
      let setup = null;
      if (twoFa.totp_key_status === "pending") {
        const secret = await request("POST", "/me/totp-secret", { token: resp.data.token });
        setup = { secret: secret.secret, qr: secret.qr };
      }
      setStep({ token: resp.data.token, setup });
      setBusy(false);
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };

  const verify = async (code) => {
    setBusy(true);
    setError(null);
    try {
      const resp = await request("POST", "/verify-2fa", {
        body: { username, token: code }, token: step.token, retry: true,
      });
      await onLogin(resp.data.token);
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };

  if (step) {
    return html`<${CodeForm} step=${step} error=${error} busy=${busy} onSubmit=${verify}
      onCancel=${() => { setStep(null); setError(null); }} />`;
  }

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

function CodeForm({ step, error, busy, onSubmit, onCancel }) {
  const [code, setCode] = useState("");
  const submit = (event) => {
    event.preventDefault();
    onSubmit(code.trim());
    setCode("");
  };
  return html`<main id="main" class="login">
    <form class="card login-form" onSubmit=${submit} aria-labelledby="code-title" novalidate>
      <h1 id="code-title"><img src="/dashboard/img/icon.svg" alt="" width="32" height="32" /> Authenticator code</h1>
      ${step.setup ? html`<div class="totp-setup">
        <p>Two-factor login is on and you have no authenticator yet. Scan this code with an
          authenticator app (or type the key), then enter the code it shows.</p>
        <img src=${`data:image/png;base64,${step.setup.qr}`} alt="QR code of your TOTP secret" width="200" height="200" />
        <p>Key: <code data-testid="totp-secret">${step.setup.secret}</code></p>
      </div>` : null}
      <${Errors} error=${error} title="Login failed" />
      <div class="field">
        <label for="login-code">6-digit code</label>
        <input id="login-code" name="code" inputmode="numeric" autocomplete="one-time-code" required
          pattern="[0-9]{6}" maxlength="6" value=${code} onInput=${(e) => setCode(e.target.value)} autofocus />
      </div>
      <button type="submit" class="primary" disabled=${busy}>${busy ? "Checking…" : "Verify"}</button>
      <button type="button" onClick=${onCancel} disabled=${busy}>Back</button>
    </form>
  </main>`;
}
