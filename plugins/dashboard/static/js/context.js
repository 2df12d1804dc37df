// What every page may need: the logged-in user (/me, with isAdmin) and the server's /status.
import { useContext } from "preact/hooks";
import { createContext } from "./html.js";

export const AppContext = createContext(null);
export const useApp = () => useContext(AppContext);
