import { html, render } from "./html.js";
import { App } from "./app.js";

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
