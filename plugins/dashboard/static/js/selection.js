// The clients picked in the clients table (kept while the tab lives, across pages), for running
// a command on them. Capped so that a runaway selection cannot grow without bound.
import { useEffect, useState } from "preact/hooks";

export const MAX_SELECTED = 10000;
const ids = new Set();
const listeners = new Set();

function changed() {
  for (const fn of listeners) fn(ids.size);
}

export const selection = {
  has: (id) => ids.has(id),
  ids: () => [...ids],
  get size() {
    return ids.size;
  },
  toggle(id, on = !ids.has(id)) {
    if (on && ids.size < MAX_SELECTED) ids.add(id);
    else if (!on) ids.delete(id);
    changed();
  },
  set(list, on) {
    for (const id of list) {
      if (on && ids.size < MAX_SELECTED) ids.add(id);
      else if (!on) ids.delete(id);
    }
    changed();
  },
  clear() {
    ids.clear();
    changed();
  },
};

export function useSelection() {
  const [, setSize] = useState(ids.size);
  const [, setTick] = useState(0);
  useEffect(() => {
    const fn = (size) => {
      setSize(size);
      setTick((t) => t + 1);
    };
    listeners.add(fn);
    return () => listeners.delete(fn);
  }, []);
  return selection;
}
