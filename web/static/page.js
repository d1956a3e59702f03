// What every part of the page uses: its elements by id, the live region that speaks to screen
// readers, texts shortened for labels and announcements, and hooks, by which a part tells others
// what it cannot act on itself without knowing who they are.

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) {
    throw new Error(`index.html and the page's modules disagree: no element #${id}`);
  }
  return node;
}

const announcer = byId("announcer");

export function announce(message) {
  announcer.textContent = message;
}

export function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// A module's hooks: `tell.name(...)` calls the handler that `notify({name: handler, ...})` set.
// notify must set every one of them and nothing else, so a wiring mistake fails at start-up
// rather than on the rare day a hook fires.
export function hooks(names) {
  const handlers = new Map(names.map((name) => [name, () => {
    throw new Error(`hook "${name}" was never set`);
  }]));
  const tell = {};
  for (const name of names) {
    tell[name] = (...args) => handlers.get(name)(...args);
  }
  function notify(given) {
    const missing = names.filter((name) => !(name in given));
    const unknown = Object.keys(given).filter((name) => !handlers.has(name));
    if (missing.length > 0 || unknown.length > 0) {
      throw new Error(`hooks: missing ${missing.join(", ") || "none"}; unknown ${unknown.join(", ") || "none"}`);
    }
    for (const name of names) {
      handlers.set(name, given[name]);
    }
  }
  return [tell, notify];
}
