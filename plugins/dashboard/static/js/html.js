// Preact with htm: tagged templates instead of JSX, so there is no build step.
import { h, render, createContext } from "preact";
import htm from "htm";

export const html = htm.bind(h);
export { h, render, createContext };
