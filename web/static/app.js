// The items page: lists, adds, edits and deletes items through the items API under api/ (same
// origin), and follows changes made elsewhere through its change stream.
// Item data is only ever written with textContent, so an item's text can never become markup,
// and nothing here needs inline script or style, so a strict Content-Security-Policy holds.
(function () {
  "use strict";

  const PAGE_SIZE = 100;
  // One more than is shown: whether it came back says whether there is another page.
  const PAGE_REQUEST = PAGE_SIZE + 1;
  // Without the change stream, how often a visible page checks for changes made elsewhere (a 304
  // when there are none).
  const LIVE_CHECK_MS = 3000;
  // After the stream was refused (or is not there), polling goes on and the stream is tried
  // again this much later.
  const STREAM_RETRY_MS = 30000;
  // Longer than nginx waits for the API (its API_READ_TIMEOUT), so nginx's JSON 504 arrives
  // before the page gives up on its own.
  const REQUEST_TIMEOUT_MS = 45000;
  // While the API cannot be reached, a visible page asks again this often, so it is back within
  // two seconds of the API; a hidden page does not ask until it is shown.
  const PROBE_FIRST_DELAY_MS = 1000;
  const PROBE_MAX_DELAY_MS = 1500;
  const CLOCK_TICK_MS = 30000;
  // How long a delete can be undone: the DELETE is sent only when this has passed.
  const UNDO_MS = 7000;
  // Longer texts are shown collapsed to a few lines, with "Show more".
  const LONG_TEXT_CHARS = 400;
  const LONG_TEXT_LINES = 6;
  // The length counter appears once a text reaches this share of the limit.
  const COUNTER_FROM = 0.9;
  // Statuses that mean "the API is not there" rather than "the API said no".
  const GATEWAY_STATUSES = new Set([502, 503, 504]);

  const el = {
    banner: byId("banner"),
    retryNow: byId("retry-now"),
    form: byId("add-form"),
    input: byId("item-text"),
    addButton: byId("add-button"),
    formError: byId("form-error"),
    status: byId("list-status"),
    statusText: byId("list-status-text"),
    listRetry: byId("list-retry"),
    listNotice: byId("list-notice"),
    list: byId("items"),
    loadMore: byId("load-more"),
    backToTop: byId("back-to-top"),
    announcer: byId("announcer"),
    counter: byId("char-count"),
    toast: byId("toast"),
    toastText: byId("toast-text"),
    toastUndo: byId("toast-undo"),
    count: byId("item-count"),
  };

  function byId(id) {
    const node = document.getElementById(id);
    if (!node) {
      throw new Error(`index.html and app.js disagree: no element #${id}`);
    }
    return node;
  }

  // ---- API access ----------------------------------------------------------------------------

  // What the API said no with. `message` is for logs; the page words its own messages, and
  // `reference` (the request id) is what support can look up.
  class ApiError extends Error {
    constructor(status, message, reference) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.reference = reference;
    }
  }

  class UnavailableError extends Error {
    constructor() {
      super("API unavailable");
      this.name = "UnavailableError";
    }
  }

  function fetchInit(options) {
    const init = Object.assign({}, options, {
      cache: "no-store",
      headers: Object.assign({ Accept: "application/json" }, options && options.headers),
    });
    if (typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") {
      init.signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    }
    return init;
  }

  // Resolves with the parsed JSON body (null for 204); rejects with UnavailableError when the API
  // cannot be reached, or ApiError carrying the API's `detail` message. `onResponse` may read the
  // headers of an answer that came.
  async function request(path, options, onResponse) {
    let response;
    try {
      response = await fetch(path, fetchInit(options));
    } catch (_) {
      throw new UnavailableError();
    }
    if (GATEWAY_STATUSES.has(response.status)) {
      throw new UnavailableError();
    }
    apiAnswered(response.ok);
    if (response.ok) {
      noteTotal(response);
    }
    if (onResponse) {
      onResponse(response);
    }
    const body = await readJson(response);
    if (!response.ok) {
      throw new ApiError(response.status, detailMessage(body, response.status), response.headers.get("X-Request-Id") || "");
    }
    return body;
  }

  async function readJson(response) {
    const type = response.headers.get("Content-Type") || "";
    if (response.status === 204 || !type.includes("json")) {
      return null;
    }
    try {
      return await response.json();
    } catch (_) {
      return null;
    }
  }

  // The API answers {"detail": "text"}, or {"detail": [{"msg": ...}, ...]} for a malformed request.
  function detailMessage(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string" && detail.trim() !== "") {
      return detail;
    }
    if (Array.isArray(detail)) {
      const messages = detail
        .map((entry) => (entry && typeof entry.msg === "string" ? entry.msg : ""))
        .filter((msg) => msg !== "");
      if (messages.length > 0) {
        return messages.join("; ");
      }
    }
    return `Request failed (HTTP ${status}).`;
  }

  // ---- Times ---------------------------------------------------------------------------------

  const relativeFormat = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  const UNITS = [
    ["year", 365 * 24 * 3600],
    ["month", 30 * 24 * 3600],
    ["week", 7 * 24 * 3600],
    ["day", 24 * 3600],
    ["hour", 3600],
    ["minute", 60],
  ];

  function parseTimestamp(value) {
    if (typeof value !== "string") {
      return null;
    }
    // The API sends microseconds; Date.parse is only specified for milliseconds. A timestamp
    // without a zone is UTC (SQLite's own format), not local time.
    let text = value.trim().replace(" ", "T").replace(/(\.\d{3})\d+/, "$1");
    if (!/(Z|[+-]\d{2}:?\d{2})$/i.test(text)) {
      text += "Z";
    }
    const ms = Date.parse(text);
    return Number.isNaN(ms) ? null : new Date(ms);
  }

  function relativeTime(date) {
    // A server clock slightly ahead of this one must not produce "in 2 minutes".
    const seconds = Math.min(0, Math.round((date.getTime() - Date.now()) / 1000));
    if (seconds > -45) {
      return "just now";
    }
    for (const [unit, size] of UNITS) {
      if (-seconds >= size || unit === "minute") {
        return relativeFormat.format(Math.round(seconds / size), unit);
      }
    }
    return "";
  }

  function exactUtc(date) {
    const iso = date.toISOString();
    return `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
  }

  function refreshTimes() {
    for (const time of el.list.querySelectorAll("time[datetime]")) {
      time.textContent = relativeTime(new Date(time.dateTime));
    }
  }

  // ---- The list ------------------------------------------------------------------------------

  const rows = new Map(); // item id -> <li>
  let oldestId = null; // keyset cursor for "Load more"
  let hasMore = false;
  let listGeneration = 0; // a newer full reload makes older responses stale
  // What this page changed since the latest full reload was sent: its response may predate these
  // changes, so it must neither drop an item just added nor bring back one just deleted.
  const addedSinceReload = new Set(); // item ids
  const deletedSinceReload = new Set(); // item ids
  // Counts changes made here; a check for changes elsewhere that saw one happen is not applied.
  let localChanges = 0;

  // ---- The item count, in the heading and the title ------------------------------------------

  let serverTotal = null; // the count the API last gave (with a list, or with a change)
  // Deleted here and confirmed, but not yet seen in a count from the API.
  const settledDeletes = new Set(); // item ids

  function showCount() {
    if (serverTotal === null) {
      return;
    }
    // Items deleted here (undo still possible, or not yet counted) are not counted.
    const total = Math.max(0, serverTotal - pendingDeletes.size - settledDeletes.size);
    const text = total.toLocaleString("en");
    el.count.textContent = text;
    el.count.hidden = false;
    document.title = `Items (${text})`;
  }

  // `complete`: a count read after every delete confirmed here, so none is still to be counted.
  function setServerTotal(total, complete) {
    if (Number.isSafeInteger(total) && total >= 0) {
      serverTotal = total;
      if (complete) {
        settledDeletes.clear();
      }
      showCount();
    }
  }

  // The whole list's count, which list answers carry.
  function noteTotal(response) {
    const header = response.headers.get("X-Total-Count");
    if (header !== null && /^[0-9]+$/.test(header)) {
      setServerTotal(Number(header), true);
    }
  }

  function renderItem(item) {
    const li = document.createElement("li");
    li.className = "item";
    li.dataset.id = String(item.id);

    const body = document.createElement("div");
    body.className = "item-body";
    const text = document.createElement("p");
    text.className = "item-text";
    text.dir = "auto";
    text.textContent = item.text;
    const time = document.createElement("time");
    time.className = "item-time";
    const created = parseTimestamp(item.created_at);
    if (created) {
      time.dateTime = created.toISOString();
      time.title = exactUtc(created);
      time.textContent = relativeTime(created);
    } else {
      time.textContent = String(item.created_at || "");
    }
    body.append(text, time);

    const actions = document.createElement("div");
    actions.className = "item-actions";
    actions.append(
      makeButton("button", "button-quiet item-edit", "Edit"),
      makeButton("button", "button-danger item-delete", "Delete"),
    );

    li.append(body, actions);
    labelRow(li, item.text);
    fitLongText(li, item.text);
    return li;
  }

  function makeButton(type, classes, label) {
    const button = document.createElement("button");
    button.type = type;
    button.className = `button ${classes}`;
    button.textContent = label;
    return button;
  }

  // Names the row's buttons after its text, shortened as a screen reader should hear it.
  function labelRow(li, text) {
    li.querySelector(".item-edit").setAttribute("aria-label", `Edit “${shorten(text, 60)}”`);
    li.querySelector(".item-delete").setAttribute("aria-label", `Delete “${shorten(text, 60)}”`);
  }

  function setRowText(li, text) {
    li.querySelector(".item-text").textContent = text;
    labelRow(li, text);
    fitLongText(li, text);
  }

  // A long text is collapsed, with a button that shows all of it (and collapses it again).
  function fitLongText(li, text) {
    const long = text.length > LONG_TEXT_CHARS || text.split("\n").length > LONG_TEXT_LINES;
    const paragraph = li.querySelector(".item-text");
    let toggle = li.querySelector(".item-more");
    if (!long) {
      paragraph.classList.remove("is-collapsed");
      if (toggle) {
        toggle.remove();
      }
      return;
    }
    if (!toggle) {
      toggle = makeButton("button", "button-quiet item-more", "Show more");
      paragraph.after(toggle);
    }
    setCollapsed(li, true);
  }

  function setCollapsed(li, collapsed) {
    li.querySelector(".item-text").classList.toggle("is-collapsed", collapsed);
    const toggle = li.querySelector(".item-more");
    toggle.textContent = collapsed ? "Show more" : "Show less";
    toggle.setAttribute("aria-expanded", collapsed ? "false" : "true");
  }

  // Puts a row back in its place in the list (newest first).
  function insertRow(li, id) {
    const after = Array.from(el.list.children).find((row) => Number(row.dataset.id) < id);
    el.list.insertBefore(li, after || null);
    rows.set(id, li);
    oldestId = oldestId === null ? id : Math.min(oldestId, id);
  }

  function shorten(text, max) {
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function addRows(items, where) {
    const fragment = document.createDocumentFragment();
    for (const item of items) {
      if (rows.has(item.id) || pendingDeletes.has(item.id)) {
        continue;
      }
      const li = renderItem(item);
      rows.set(item.id, li);
      fragment.append(li);
      if (oldestId === null || item.id < oldestId) {
        oldestId = item.id;
      }
    }
    const first = fragment.firstElementChild;
    if (where === "top") {
      el.list.prepend(fragment);
    } else {
      el.list.append(fragment);
    }
    return first;
  }

  function setListStatus(kind, message) {
    el.status.hidden = kind === "ready";
    el.status.classList.toggle("is-error", kind === "error");
    el.listRetry.hidden = kind !== "error";
    el.statusText.textContent = message || "";
  }

  function updateListChrome() {
    el.loadMore.hidden = !hasMore || rows.size === 0;
    // Past the first page the list is long: a way back to the field at the top.
    el.backToTop.hidden = rows.size <= PAGE_SIZE;
    if (rows.size > 0) {
      setListStatus("ready");
    } else {
      setListStatus("empty", "No items yet. Add the first one above.");
    }
  }

  function handleListError(error, what) {
    if (error instanceof UnavailableError) {
      showUnavailable();
      if (rows.size === 0) {
        setListStatus("unavailable", "The items will appear here as soon as the list can be reached.");
      }
    } else if (error instanceof ApiError) {
      const message = `Could not ${what}. Try again in a moment${withReference(error)}.`;
      if (rows.size === 0) {
        setListStatus("error", message);
      } else {
        showListNotice(message);
      }
    } else {
      setListStatus("error", `Could not ${what}.`);
      throw error;
    }
  }

  async function loadFirstPage() {
    const generation = ++listGeneration;
    // Changes whose answer came before this request is sent are in its response.
    addedSinceReload.clear();
    deletedSinceReload.clear();
    el.list.setAttribute("aria-busy", "true");
    if (rows.size === 0) {
      setListStatus("loading", "Loading items…");
    }
    try {
      const items = await request(`api/items?limit=${PAGE_REQUEST}`);
      if (generation !== listGeneration) {
        return;
      }
      replaceFirstPage(items.slice(0, PAGE_SIZE));
      hasMore = items.length > PAGE_SIZE;
      showListNotice("");
      updateListChrome();
      if (uncertainAdds.length > 0) {
        finishUncertainAdds();
      }
    } catch (error) {
      if (generation === listGeneration) {
        handleListError(error, "load the items");
      }
    } finally {
      if (generation === listGeneration) {
        el.list.removeAttribute("aria-busy");
      }
    }
  }

  // Replaces the list with a freshly loaded first page (newest first), except for changes made here
  // while it was loading: an item added meanwhile is newer than the page's newest item and is
  // kept (its row stays in place, with its focus); an item deleted meanwhile is left out.
  function replaceFirstPage(items) {
    const newestLoaded = items.reduce((newest, item) => Math.max(newest, item.id), -Infinity);
    const keep = new Set();
    for (const id of addedSinceReload) {
      if (id > newestLoaded && rows.has(id)) {
        keep.add(id);
      }
    }
    oldestId = null;
    for (const [id, li] of rows) {
      if (keep.has(id)) {
        oldestId = oldestId === null ? id : Math.min(oldestId, id);
      } else {
        rows.delete(id);
        li.remove();
      }
    }
    // Anything else in the list (there should be nothing) goes too.
    for (const child of Array.from(el.list.children)) {
      if (!keep.has(Number(child.dataset.id))) {
        child.remove();
      }
    }
    addRows(items.filter((item) => !deletedSinceReload.has(item.id)), "bottom");
    addedSinceReload.clear();
    deletedSinceReload.clear();
  }

  let loadingMore = false;

  async function loadMore() {
    if (oldestId === null || loadingMore) {
      return;
    }
    const generation = listGeneration;
    const cursor = oldestId;
    // Marked busy rather than disabled: a disabled button loses keyboard focus to the page body.
    loadingMore = true;
    el.loadMore.setAttribute("aria-disabled", "true");
    el.loadMore.textContent = "Loading…";
    try {
      const items = await request(`api/items?before=${encodeURIComponent(cursor)}&limit=${PAGE_REQUEST}`);
      // A reload that started or finished meanwhile owns the list now; the next page must follow
      // the list's current oldest item, or it would leave a gap.
      if (generation !== listGeneration || cursor !== oldestId) {
        return;
      }
      const hadFocus = document.activeElement === el.loadMore;
      const firstNew = addRows(items.slice(0, PAGE_SIZE), "bottom");
      hasMore = items.length > PAGE_SIZE;
      updateListChrome();
      // After the last page the button goes: keyboard focus moves on to the first item it brought.
      if (hadFocus && el.loadMore.hidden) {
        const target = firstNew || el.list.lastElementChild;
        (target ? target.querySelector("button") : el.input).focus();
      }
    } catch (error) {
      handleListError(error, "load more items");
    } finally {
      loadingMore = false;
      el.loadMore.removeAttribute("aria-disabled");
      el.loadMore.textContent = "Load more";
    }
  }

  function showListNotice(message) {
    el.listNotice.textContent = message;
  }

  function announce(message) {
    el.announcer.textContent = message;
  }

  // ---- Adding and deleting -------------------------------------------------------------------

  // The longest text the API takes (its documented maxLength), once known.
  let textLimit = null;

  async function loadTextLimit() {
    try {
      const spec = await request("api/openapi.json");
      const limit = spec.components.schemas.CreateItem.properties.text.maxLength;
      textLimit = Number.isInteger(limit) && limit > 0 ? limit : null;
    } catch (_) {
      textLimit = null; // no counter, and the API still says no to a text that is too long
    }
    updateCounter();
  }

  // Characters as the API counts them (code points, not UTF-16 units).
  function characters(text) {
    let count = 0;
    for (const _ of text) {
      count += 1;
    }
    return count;
  }

  function updateCounter() {
    const used = textLimit === null ? 0 : characters(el.input.value.trim());
    const near = textLimit !== null && used >= textLimit * COUNTER_FROM;
    el.counter.hidden = !near;
    if (!near) {
      return;
    }
    const over = used - textLimit;
    el.counter.classList.toggle("is-over", over > 0);
    el.counter.textContent = over > 0
      ? `${over.toLocaleString("en")} characters too many (at most ${textLimit.toLocaleString("en")})`
      : `${used.toLocaleString("en")} of ${textLimit.toLocaleString("en")} characters`;
  }

  let adding = false;
  // POSTs that got no real answer may still have been committed: each one's text and the
  // Idempotency-Key it was sent with. Once the list is back the page sends them again with the same
  // keys, and the API either stores each now or answers with what it stored the first time: never two.
  let uncertainAdds = [];

  function withReference(error) {
    return error.reference ? ` (reference ${error.reference.slice(0, 8)})` : "";
  }

  // A fresh key for one add: 128 random bits (crypto.randomUUID needs a secure context).
  function newIdempotencyKey() {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  // POSTs an item; resolves with it and whether the API answered for an earlier try with the key.
  async function postItem(text, key) {
    let replayed = false;
    const item = await request(
      "api/items",
      {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": key },
        body: JSON.stringify({ text }),
      },
      (response) => {
        replayed = response.headers.get("Idempotent-Replayed") === "true";
      },
    );
    return { item, replayed };
  }

  async function finishUncertainAdds() {
    const unsettled = uncertainAdds;
    uncertainAdds = [];
    for (const add of unsettled) {
      await finishUncertainAdd(add);
    }
    updateCounter();
  }

  async function finishUncertainAdd({ text, key }) {
    const shown = shorten(text.trim(), 60);
    try {
      const { item, replayed } = await postItem(text, key);
      if (el.input.value === text) {
        el.input.value = "";
      }
      showAdded(item);
      showFormError(
        replayed ? `Your item “${shown}” was saved after all.` : `Your item “${shown}” was saved now that the list is back.`,
        false,
      );
    } catch (error) {
      if (error instanceof UnavailableError) {
        // Still unsettled: the next recovery sends it once more.
        uncertainAdds.push({ text, key });
      } else if (error instanceof ApiError) {
        showFormError(addFailure(error), error.status < 500);
      } else {
        throw error;
      }
    }
  }

  // Shows an item this page added (now, or by finishing an add whose answer was lost).
  function showAdded(item) {
    addedSinceReload.add(item.id);
    localChanges += 1;
    if (!streamLive && serverTotal !== null && !rows.has(item.id)) {
      serverTotal += 1;
    }
    const li = addRows([item], "top");
    if (li) {
      li.classList.add("is-new");
    }
    updateListChrome();
    showCount();
    announce(`Added “${shorten(item.text, 60)}”.`);
  }

  // What to say when the API refused an add, in the user's words.
  function addFailure(error) {
    if (error.status === 400) {
      return "Write something first: an item cannot be empty.";
    }
    if (error.status === 413 || error.status === 422) {
      return "That text is too long for an item.";
    }
    return `The item was not saved. Try again in a moment${withReference(error)}.`;
  }

  function showFormError(message, invalid) {
    el.formError.textContent = message;
    el.input.setAttribute("aria-invalid", invalid ? "true" : "false");
  }

  async function onSubmit(event) {
    event.preventDefault();
    if (adding) {
      return;
    }
    adding = true;
    el.addButton.disabled = true;
    showFormError("", false);
    const text = el.input.value;
    if (textLimit !== null && characters(text.trim()) > textLimit) {
      showFormError(`Too long: an item holds at most ${textLimit.toLocaleString("en")} characters.`, true);
      adding = false;
      el.addButton.disabled = false;
      return;
    }
    const key = newIdempotencyKey();
    try {
      // The API trims and validates; its `detail` is what the user sees (e.g. for blank text).
      const { item } = await postItem(text, key);
      if (el.input.value === text) {
        el.input.value = "";
      }
      showAdded(item);
    } catch (error) {
      if (error instanceof UnavailableError) {
        // A request that timed out (or a 503 that could not confirm the commit) may have been
        // stored all the same: the key settles it once the list is back.
        uncertainAdds.push({ text, key });
        showUnavailable();
        showFormError(
          "The list cannot be reached right now, so your item may not be saved yet. This page will save it as soon as the list is back.",
          false,
        );
      } else if (error instanceof ApiError) {
        showFormError(addFailure(error), error.status < 500);
      } else {
        showFormError("Something went wrong; the item was not saved.", false);
        throw error;
      }
    } finally {
      adding = false;
      el.addButton.disabled = false;
      el.input.focus();
      applyDeferredEvents();
    }
  }

  function onListClick(event) {
    const button = event.target.closest("button");
    if (!button || !el.list.contains(button)) {
      return;
    }
    const li = button.closest(".item");
    if (button.classList.contains("item-delete")) {
      deleteWithUndo(li);
    } else if (button.classList.contains("item-edit")) {
      startEditing(li);
    } else if (button.classList.contains("item-cancel")) {
      stopEditing(li);
    } else if (button.classList.contains("item-more")) {
      setCollapsed(li, button.getAttribute("aria-expanded") === "true");
    }
  }

  // A delete is undoable: the row leaves at once, and the DELETE is sent only once the undo
  // window has passed (or the page is being left), so an undone delete never reached the server
  // and the item keeps its id and creation time.
  const pendingDeletes = new Map(); // item id -> {li, text, timer}
  let toastFor = null; // the item id the toast offers to restore

  function deleteWithUndo(li) {
    const id = Number(li.dataset.id);
    const text = li.querySelector(".item-text").textContent;
    showListNotice("");
    clearRowError(li);
    const timer = setTimeout(() => sendDelete(id), UNDO_MS);
    pendingDeletes.set(id, { li, text, timer });
    removeRow(li, id);
    showCount();
    showToast(id, text);
    announce(`Deleted “${shorten(text, 60)}”. To undo, press Control Z or the Undo button.`);
  }

  function undoDelete(id) {
    const pending = pendingDeletes.get(id);
    if (!pending) {
      return;
    }
    clearTimeout(pending.timer);
    pendingDeletes.delete(id);
    hideToast(id);
    insertRow(pending.li, id);
    updateListChrome();
    showCount();
    pending.li.querySelector(".item-delete").focus();
    announce(`Restored “${shorten(pending.text, 60)}”.`);
  }

  async function sendDelete(id) {
    const pending = pendingDeletes.get(id);
    if (!pending) {
      return;
    }
    hideToast(id);
    let deletedHere = true;
    try {
      await request(`api/items/${encodeURIComponent(id)}`, { method: "DELETE" });
    } catch (error) {
      // A 404: deleted elsewhere already, which the count has seen or will see.
      deletedHere = false;
      if (!(error instanceof ApiError && error.status === 404)) {
        // Not deleted: the item comes back, with the reason on its row.
        pendingDeletes.delete(id);
        insertRow(pending.li, id);
        updateListChrome();
        showCount();
        const reason = error instanceof UnavailableError
          ? "Not deleted: the list cannot be reached right now. Try again in a moment."
          : "Not deleted: something went wrong. Try again.";
        showRowError(pending.li, reason);
        announce(`“${shorten(pending.text, 60)}” was not deleted.`);
        if (error instanceof UnavailableError) {
          showUnavailable();
        }
        return;
      }
    }
    if (!pendingDeletes.delete(id)) {
      // The stream reported the deletion first, and counted it.
      deletedHere = false;
    }
    deletedSinceReload.add(id);
    localChanges += 1;
    if (deletedHere && streamLive) {
      // Counted once the stream reports it.
      settledDeletes.add(id);
    } else if (deletedHere && serverTotal !== null) {
      serverTotal -= 1;
    }
    showCount();
  }

  // Leaving the page ends the undo window: what is still pending is sent now.
  function sendPendingDeletes() {
    for (const [id, pending] of pendingDeletes) {
      clearTimeout(pending.timer);
      fetch(`api/items/${encodeURIComponent(id)}`, { method: "DELETE", keepalive: true }).catch(() => {});
    }
    pendingDeletes.clear();
  }

  function showToast(id, text) {
    toastFor = id;
    el.toastText.textContent = `Deleted “${shorten(text, 60)}”.`;
    el.toast.hidden = false;
  }

  function hideToast(id) {
    if (toastFor === id) {
      toastFor = null;
      el.toast.hidden = true;
    }
  }

  function removeRow(li, id) {
    // Keyboard users keep their place: focus moves to the neighbouring item, or to the input.
    const next = li.nextElementSibling || li.previousElementSibling;
    const hadFocus = li.contains(document.activeElement) || document.activeElement === document.body;
    rows.delete(id);
    li.remove();
    if (hadFocus) {
      (next ? next.querySelector(".item-delete") : el.input).focus();
    }
    if (rows.size === 0 && hasMore) {
      loadFirstPage();
    } else {
      updateListChrome();
    }
  }

  function showRowError(li, message) {
    let error = li.querySelector(".item-error");
    if (!error) {
      error = document.createElement("p");
      error.className = "item-error";
      li.querySelector(".item-body").append(error);
    }
    error.textContent = message;
  }

  function clearRowError(li) {
    const error = li.querySelector(".item-error");
    if (error) {
      error.remove();
    }
  }

  // ---- Editing an item in place --------------------------------------------------------------

  function startEditing(li) {
    if (li.classList.contains("is-editing")) {
      return;
    }
    const text = li.querySelector(".item-text").textContent;
    clearRowError(li);
    const form = document.createElement("form");
    form.className = "item-edit-form";
    form.noValidate = true;
    const field = document.createElement("input");
    field.type = "text";
    field.className = "field item-edit-field";
    field.dir = "auto";
    field.enterKeyHint = "done";
    field.value = text;
    field.setAttribute("aria-label", `Edit “${shorten(text, 60)}”`);
    const buttons = document.createElement("div");
    buttons.className = "item-edit-buttons";
    buttons.append(
      makeButton("submit", "button-primary item-save", "Save"),
      makeButton("button", "button-quiet item-cancel", "Cancel"),
    );
    form.append(field, buttons);
    li.querySelector(".item-body").append(form);
    li.classList.add("is-editing");
    field.focus();
    field.setSelectionRange(field.value.length, field.value.length);
  }

  function stopEditing(li) {
    const form = li.querySelector(".item-edit-form");
    if (form) {
      form.remove();
    }
    clearRowError(li);
    li.classList.remove("is-editing");
    li.querySelector(".item-edit").focus();
  }

  async function onEditSubmit(event) {
    const form = event.target.closest(".item-edit-form");
    if (!form) {
      return;
    }
    event.preventDefault();
    const li = form.closest(".item");
    const id = Number(li.dataset.id);
    const field = form.querySelector(".item-edit-field");
    const save = form.querySelector(".item-save");
    if (save.getAttribute("aria-disabled") === "true") {
      return;
    }
    save.setAttribute("aria-disabled", "true");
    try {
      const item = await request(`api/items/${encodeURIComponent(id)}`, {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: field.value }),
      });
      localChanges += 1;
      setRowText(li, item.text);
      stopEditing(li);
      announce(`Saved “${shorten(item.text, 60)}”.`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        removeRow(li, id);
        announce("That item was deleted elsewhere.");
        return;
      }
      field.setAttribute("aria-invalid", error instanceof ApiError && error.status < 500 ? "true" : "false");
      showRowError(li, editFailure(error));
      if (error instanceof UnavailableError) {
        showUnavailable();
      }
      field.focus();
    } finally {
      save.removeAttribute("aria-disabled");
    }
  }

  function editFailure(error) {
    if (error instanceof UnavailableError) {
      return "Not saved: the list cannot be reached right now. Try again in a moment.";
    }
    if (error instanceof ApiError && error.status === 400) {
      return "Not saved: an item needs some text. Press Escape to keep it as it was.";
    }
    if (error instanceof ApiError && error.status === 422) {
      return "Not saved: that text is too long for an item.";
    }
    return "Not saved: something went wrong. Try again.";
  }

  function onEditKeydown(event) {
    if (event.key === "Escape" && event.target.classList.contains("item-edit-field")) {
      event.preventDefault();
      stopEditing(event.target.closest(".item"));
    }
  }

  // ---- Changes made elsewhere: the change stream, else a re-read of the first page now and then -

  let firstPageTag = null; // the ETag of the first page as last merged
  let liveTimer = null;
  let checking = false;
  let checkAgain = false; // asked for while a check was running

  function scheduleLiveCheck(delay) {
    if (liveTimer !== null) {
      clearTimeout(liveTimer);
    }
    liveTimer = setTimeout(checkForChanges, delay);
  }

  async function checkForChanges() {
    liveTimer = null;
    // A hidden tab does not ask; it checks once it is shown again.
    if (document.visibilityState !== "visible" || unavailable) {
      return;
    }
    if (checking) {
      checkAgain = true;
      return;
    }
    if (loadingMore || adding || el.list.hasAttribute("aria-busy")) {
      // Asked again once that is done: soon when the stream asked (it will not ask again).
      scheduleLiveCheck(streamLive ? 250 : LIVE_CHECK_MS);
      return;
    }
    checking = true;
    checkAgain = false;
    let stale = false;
    const generation = listGeneration;
    const changesBefore = localChanges;
    try {
      const headers = firstPageTag ? { "If-None-Match": firstPageTag } : {};
      const response = await fetch(`api/items?limit=${PAGE_REQUEST}`, fetchInit({ headers }));
      if (GATEWAY_STATUSES.has(response.status)) {
        throw new UnavailableError();
      }
      apiAnswered(response.ok || response.status === 304);
      if (generation === listGeneration && changesBefore === localChanges && (response.ok || response.status === 304)) {
        noteTotal(response);
      }
      if (response.status === 200) {
        const items = await response.json();
        // What it read may predate a change made here meanwhile, or a reload owns the list now.
        if (generation === listGeneration && changesBefore === localChanges && !loadingMore) {
          mergeFirstPage(items);
          firstPageTag = response.headers.get("ETag");
        } else {
          stale = true;
        }
      }
    } catch (error) {
      if (error instanceof UnavailableError) {
        showUnavailable();
      }
      // Anything else (an error answer, a body cut short) waits for the next check.
    } finally {
      checking = false;
      if (!streamLive) {
        scheduleLiveCheck(LIVE_CHECK_MS);
      } else if (stale || checkAgain) {
        // The stream asked for this check and will not ask again: it must happen.
        scheduleLiveCheck(250);
      }
    }
  }

  // Brings the rows in line with a fresh first page: items in its range that it lacks were deleted
  // elsewhere, items it has that are not shown were added elsewhere. Older rows (pages loaded
  // with "Load more") stay, and rows that stay keep their element, so focus stays put.
  function mergeFirstPage(items) {
    const page = items.slice(0, PAGE_SIZE);
    const complete = items.length <= PAGE_SIZE;
    const pageIds = new Set(page.map((item) => item.id));
    const oldestInPage = page.reduce((oldest, item) => Math.min(oldest, item.id), Infinity);
    let removed = 0;
    for (const [id, li] of Array.from(rows)) {
      if ((complete || id >= oldestInPage) && !pageIds.has(id)) {
        dropRow(li, id);
        removed += 1;
      }
    }
    let added = 0;
    for (const item of page) {
      const shown = rows.get(item.id);
      if (shown) {
        showChangedText(shown, item.text);
        continue;
      }
      if (pendingDeletes.has(item.id)) {
        continue;
      }
      insertRow(renderItem(item), item.id);
      added += 1;
    }
    oldestId = rows.size === 0 ? null : Math.min(...rows.keys());
    if (complete) {
      hasMore = false;
    } else if (oldestId >= oldestInPage) {
      // No page beyond the first is shown, and the first is followed by more.
      hasMore = true;
    }
    if (added > 0 || removed > 0) {
      updateListChrome();
      announce(changeSummary(added, removed));
    }
  }

  // A row that left by a change made elsewhere: focus, if it was there, moves to a neighbour (or
  // to the field), never to the page body.
  function dropRow(li, id) {
    const next = li.nextElementSibling || li.previousElementSibling;
    const hadFocus = li.contains(document.activeElement);
    rows.delete(id);
    li.remove();
    if (hadFocus) {
      (next ? next.querySelector("button") : el.input).focus();
    }
  }

  // Text changed elsewhere; a row being edited here keeps what its user is writing.
  function showChangedText(li, text) {
    if (!li.classList.contains("is-editing") && li.querySelector(".item-text").textContent !== text) {
      setRowText(li, text);
    }
  }

  function changeSummary(added, removed) {
    const parts = [];
    if (added > 0) {
      parts.push(added === 1 ? "1 item added" : `${added} items added`);
    }
    if (removed > 0) {
      parts.push(removed === 1 ? "1 item removed" : `${removed} items removed`);
    }
    return `${parts.join(", ")} by someone else.`;
  }

  // The stream (api/items/events) tells a visible page each change as it is made. While it is
  // open, the page does not poll; it re-reads the first page only when the stream starts or says
  // changes may have been missed (`ready`, `reset`). A hidden page closes it.
  let stream = null;
  let streamLive = false;
  let streamRetryTimer = null;
  const deferredEvents = []; // change events that came while an add was being answered

  function openStream() {
    if (stream || typeof EventSource === "undefined" || document.visibilityState !== "visible" || unavailable) {
      return;
    }
    if (streamRetryTimer !== null) {
      clearTimeout(streamRetryTimer);
      streamRetryTimer = null;
    }
    stream = new EventSource("api/items/events");
    stream.addEventListener("ready", onStreamStart);
    stream.addEventListener("reset", onStreamStart);
    for (const name of ["created", "updated", "deleted"]) {
      stream.addEventListener(name, onChangeEvent);
    }
    stream.addEventListener("error", onStreamError);
  }

  function closeStream() {
    if (stream) {
      stream.close();
      stream = null;
    }
    streamLive = false;
  }

  function onStreamStart(event) {
    const data = parseEventData(event);
    streamLive = true;
    if (data) {
      setServerTotal(data.total, true);
    }
    // Whatever changed before the stream started (or while it was away) comes with the list.
    if (liveTimer !== null) {
      clearTimeout(liveTimer);
      liveTimer = null;
    }
    checkForChanges();
  }

  function onStreamError() {
    streamLive = false;
    if (stream && stream.readyState === EventSource.CLOSED) {
      // Refused (too many streams, the API down): poll, and try the stream again later, or as
      // soon as the API is back.
      stream = null;
      if (!unavailable && document.visibilityState === "visible") {
        streamRetryTimer = setTimeout(() => {
          streamRetryTimer = null;
          openStream();
        }, STREAM_RETRY_MS);
      }
    }
    // While the browser reconnects by itself, the page polls.
    if (liveTimer === null && !checking) {
      scheduleLiveCheck(LIVE_CHECK_MS);
    }
  }

  function parseEventData(event) {
    try {
      const data = JSON.parse(event.data);
      return data && typeof data === "object" ? data : null;
    } catch (_) {
      return null;
    }
  }

  function onChangeEvent(event) {
    const data = parseEventData(event);
    if (!data) {
      return;
    }
    if (adding) {
      // The add being answered may be this very item: its own answer puts it in first.
      deferredEvents.push({ type: event.type, data });
      return;
    }
    applyChange(event.type, data);
  }

  function applyDeferredEvents() {
    for (const { type, data } of deferredEvents.splice(0)) {
      applyChange(type, data);
    }
  }

  function applyChange(type, data) {
    localChanges += 1;
    if (type === "deleted") {
      applyDeletion(data.id);
    } else if (data.item && Number.isSafeInteger(data.item.id)) {
      const item = data.item;
      const shown = rows.get(item.id);
      const pending = pendingDeletes.get(item.id);
      if (shown) {
        showChangedText(shown, item.text);
      } else if (pending) {
        setRowText(pending.li, item.text);
        pending.text = item.text;
      } else if (type === "created" && !(hasMore && oldestId !== null && item.id < oldestId)) {
        // (An item below the pages shown arrives with its page.)
        addedSinceReload.add(item.id);
        insertRow(renderItem(item), item.id);
        updateListChrome();
        announce(changeSummary(1, 0));
      }
    }
    setServerTotal(data.total, false);
  }

  function applyDeletion(id) {
    if (!Number.isSafeInteger(id)) {
      return;
    }
    deletedSinceReload.add(id);
    settledDeletes.delete(id);
    const pending = pendingDeletes.get(id);
    if (pending) {
      // Deleted elsewhere while its undo was offered here: there is nothing left to undo.
      clearTimeout(pending.timer);
      pendingDeletes.delete(id);
      hideToast(id);
    }
    const li = rows.get(id);
    if (li) {
      dropRow(li, id);
      oldestId = rows.size === 0 ? null : Math.min(...rows.keys());
      updateListChrome();
      announce(changeSummary(0, 1));
    }
  }

  // ---- API unavailable: banner, then poll /api/healthz with backoff until it answers ----------

  let unavailable = false;
  let probeTimer = null;
  let probing = false;
  let probeDelay = PROBE_FIRST_DELAY_MS;

  function showUnavailable() {
    if (!unavailable) {
      unavailable = true;
      el.banner.hidden = false;
    }
    scheduleProbe();
  }

  function scheduleProbe() {
    if (probeTimer !== null || probing || document.visibilityState !== "visible") {
      return;
    }
    const wait = probeDelay * (0.85 + Math.random() * 0.3);
    probeDelay = Math.min(probeDelay * 2, PROBE_MAX_DELAY_MS);
    probeTimer = setTimeout(probe, wait);
  }

  async function probe() {
    probeTimer = null;
    if (probing) {
      return;
    }
    probing = true;
    let healthy = false;
    try {
      const response = await fetch("api/healthz", fetchInit());
      healthy = response.ok;
    } catch (_) {
      healthy = false;
    } finally {
      probing = false;
    }
    if (!healthy) {
      scheduleProbe();
      return;
    }
    if (unavailable) {
      unavailable = false;
      el.banner.hidden = true;
      announce("The list can be reached again.");
    }
    loadFirstPage();
    openStream();
    if (textLimit === null) {
      loadTextLimit();
    }
  }

  function probeNow() {
    if (probeTimer !== null) {
      clearTimeout(probeTimer);
      probeTimer = null;
    }
    probe();
  }

  // Any real answer from the API (not a 502/503/504) ends an outage: probe now, which reloads the
  // list. The backoff resets only when a real API call succeeds (2xx), not on an error answer
  // (4xx, 500) nor on a healthy probe, so an API that is alive but keeps failing is not hammered.
  function apiAnswered(succeeded) {
    if (succeeded) {
      probeDelay = PROBE_FIRST_DELAY_MS;
    }
    if (unavailable) {
      probeNow();
    }
  }

  // ---- Wiring --------------------------------------------------------------------------------

  el.form.addEventListener("submit", onSubmit);
  el.input.addEventListener("input", () => {
    if (el.formError.textContent !== "") {
      showFormError("", false);
    }
    updateCounter();
  });
  el.list.addEventListener("click", onListClick);
  el.list.addEventListener("submit", onEditSubmit);
  el.list.addEventListener("keydown", onEditKeydown);
  el.toastUndo.addEventListener("click", () => undoDelete(toastFor));
  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
    if (toastFor !== null && !typing && (event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undoDelete(toastFor);
    }
  });
  window.addEventListener("pagehide", sendPendingDeletes);
  el.loadMore.addEventListener("click", () => loadMore());
  el.backToTop.addEventListener("click", () => {
    window.scrollTo({ top: 0 });
    el.input.focus({ preventScroll: true });
  });
  el.listRetry.addEventListener("click", () => loadFirstPage());
  el.retryNow.addEventListener("click", () => {
    probeDelay = PROBE_FIRST_DELAY_MS;
    probeNow();
  });
  window.addEventListener("online", () => {
    if (unavailable) {
      probeNow();
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") {
      // A page in the background holds no connection; it catches up when it is shown.
      closeStream();
      return;
    }
    refreshTimes();
    if (unavailable) {
      probeNow();
    } else {
      openStream();
      scheduleLiveCheck(0);
    }
  });
  setInterval(refreshTimes, CLOCK_TICK_MS);

  // Touch screens get no focus on load: it would open the on-screen keyboard over the list.
  if (!window.matchMedia("(pointer: coarse)").matches) {
    el.input.focus();
  }
  loadFirstPage();
  loadTextLimit();
  openStream();
  scheduleLiveCheck(LIVE_CHECK_MS);
})();
