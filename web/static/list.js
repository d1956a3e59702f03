// The list as this page knows it: which items are shown, by id, and the pages ("Load more");
// reconciling what it loaded and what it changed itself with what a re-read of the first page and
// the change stream report; the item count; and the status line and notice about the list.

import { ApiError, UnavailableError, firstPage, pageBefore, withReference } from "./api.js";
import { announce, byId, hooks, shorten } from "./page.js";
import * as view from "./rows.js";

const PAGE_SIZE = 100;
// One more than is shown: whether it came back says whether there is another page.
const PAGE_REQUEST = PAGE_SIZE + 1;

const el = {
  status: byId("list-status"),
  statusText: byId("list-status-text"),
  listRetry: byId("list-retry"),
  listNotice: byId("list-notice"),
  loadMore: byId("load-more"),
  backToTop: byId("back-to-top"),
  input: byId("item-text"),
  count: byId("item-count"),
};

// unreachable(): the API could not be reached; loaded(): a full reload was applied;
// withdrawn(id): an item whose delete could still be undone was deleted elsewhere.
const [tell, notify] = hooks(["unreachable", "loaded", "withdrawn"]);
export { notify };

const rows = new Map(); // item id -> <li>, the rows shown
// Rows taken out by a delete that can still be undone: not shown, not counted, and not brought
// back by a re-read that still has them.
const withheld = new Map(); // item id -> <li>
let oldestId = null; // keyset cursor for "Load more"
let hasMore = false;
let listGeneration = 0; // a newer full reload makes older responses stale
let reloading = false; // the latest full reload is still being answered
let loadingMore = false;
// What this page changed since the latest full reload was sent: its response may predate these
// changes, so it must neither drop an item just added nor bring back one just deleted.
const addedSinceReload = new Set(); // item ids
const deletedSinceReload = new Set(); // item ids
// Counts changes made here; a check for changes elsewhere that saw one happen is not applied.
let localChanges = 0;
// While an add made here awaits its answer, changes from the stream wait: the add may be one of
// them, and its own answer puts it in first.
let adding = false;
const deferredEvents = [];

// ---- The item count, in the heading and the title ------------------------------------------

let serverTotal = null; // the count the API last gave (with a list, or with a change)
// Deleted here and confirmed, but not yet seen in a count from the API.
const settledDeletes = new Set(); // item ids
// Whether the change stream is open: it then reports every change with the new count.
let streamCounts = false;

function showCount() {
  if (serverTotal === null) {
    return;
  }
  // Items deleted here (undo still possible, or not yet counted) are not counted.
  const total = Math.max(0, serverTotal - withheld.size - settledDeletes.size);
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

// The whole list's count, as an answer from the API gave it.
export function countFromApi(total) {
  setServerTotal(total, true);
}

// ---- Rows ----------------------------------------------------------------------------------

function addRows(items, where) {
  const added = [];
  for (const item of items) {
    if (rows.has(item.id) || withheld.has(item.id)) {
      continue;
    }
    const li = view.render(item);
    rows.set(item.id, li);
    added.push(li);
    if (oldestId === null || item.id < oldestId) {
      oldestId = item.id;
    }
  }
  return view.place(added, where);
}

function insertRow(li, id) {
  view.insert(li, id);
  rows.set(id, li);
  oldestId = oldestId === null ? id : Math.min(oldestId, id);
}

// A row this page deleted (or found deleted when it tried to save it) leaves.
export function removeRow(li, id) {
  rows.delete(id);
  view.removeDeleted(li);
  if (rows.size === 0 && hasMore) {
    loadFirstPage();
  } else {
    updateListChrome();
  }
}

function dropRow(li, id) {
  rows.delete(id);
  view.removeGone(li);
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

function showListNotice(message) {
  el.listNotice.textContent = message;
}

function handleListError(error, what) {
  if (error instanceof UnavailableError) {
    tell.unreachable();
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

// ---- Loading -------------------------------------------------------------------------------

export async function loadFirstPage() {
  const generation = ++listGeneration;
  // Changes whose answer came before this request is sent are in its response.
  addedSinceReload.clear();
  deletedSinceReload.clear();
  reloading = true;
  view.markBusy(true);
  if (rows.size === 0) {
    setListStatus("loading", "Loading items…");
  }
  try {
    const items = await firstPage(PAGE_REQUEST);
    if (generation !== listGeneration) {
      return;
    }
    replaceFirstPage(items.slice(0, PAGE_SIZE));
    hasMore = items.length > PAGE_SIZE;
    showListNotice("");
    updateListChrome();
    tell.loaded();
  } catch (error) {
    if (generation === listGeneration) {
      handleListError(error, "load the items");
    }
  } finally {
    if (generation === listGeneration) {
      reloading = false;
      view.markBusy(false);
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
  for (const id of Array.from(rows.keys())) {
    if (keep.has(id)) {
      oldestId = oldestId === null ? id : Math.min(oldestId, id);
    } else {
      rows.delete(id);
    }
  }
  // Every other row goes, including any not counted in `rows` (there should be none).
  view.keepOnly(keep);
  addRows(items.filter((item) => !deletedSinceReload.has(item.id)), "bottom");
  addedSinceReload.clear();
  deletedSinceReload.clear();
}

export async function loadMore() {
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
    const items = await pageBefore(cursor, PAGE_REQUEST);
    // A reload that started or finished meanwhile owns the list now; the next page must follow
    // the list's current oldest item, or it would leave a gap.
    if (generation !== listGeneration || cursor !== oldestId) {
      return;
    }
    const hadFocus = document.activeElement === el.loadMore;
    const firstNew = addRows(items.slice(0, PAGE_SIZE), "bottom");
    hasMore = items.length > PAGE_SIZE;
    updateListChrome();
    if (hadFocus && el.loadMore.hidden) {
      view.focusAfterLastPage(firstNew);
    }
  } catch (error) {
    handleListError(error, "load more items");
  } finally {
    loadingMore = false;
    el.loadMore.removeAttribute("aria-disabled");
    el.loadMore.textContent = "Load more";
  }
}

export function backToTop() {
  window.scrollTo({ top: 0 });
  el.input.focus({ preventScroll: true });
}

// ---- Changes made here ---------------------------------------------------------------------

// An add made here is being sent; addAnswered() once its answer (or failure) is dealt with.
export function addSent() {
  adding = true;
}

export function addAnswered() {
  adding = false;
  for (const { type, data } of deferredEvents.splice(0)) {
    applyChange(type, data);
  }
}

// Shows an item this page added (now, or by finishing an add whose answer was lost).
export function added(item) {
  addedSinceReload.add(item.id);
  localChanges += 1;
  if (!streamCounts && serverTotal !== null && !rows.has(item.id)) {
    serverTotal += 1;
  }
  const li = addRows([item], "top");
  if (li) {
    view.markNew(li);
  }
  updateListChrome();
  showCount();
  announce(`Added “${shorten(item.text, 60)}”.`);
}

// An edit made here was stored.
export function changedHere() {
  localChanges += 1;
}

// Takes a row out for a delete that can still be undone.
export function withhold(li, id) {
  showListNotice("");
  withheld.set(id, li);
  removeRow(li, id);
  showCount();
}

// Puts a withheld row back: its delete was undone, or failed.
export function restore(li, id) {
  withheld.delete(id);
  insertRow(li, id);
  updateListChrome();
  showCount();
}

// The DELETE of a withheld row was answered: the item is gone. `deletedHere`: by this page's
// DELETE, not by one made elsewhere first.
export function deleteSettled(id, deletedHere) {
  withheld.delete(id);
  deletedSinceReload.add(id);
  localChanges += 1;
  if (deletedHere && streamCounts) {
    // Counted once the stream reports it.
    settledDeletes.add(id);
  } else if (deletedHere && serverTotal !== null) {
    serverTotal -= 1;
  }
  showCount();
}

// The DELETE of a withheld row was sent as the page is left; no answer will be seen.
export function release(id) {
  withheld.delete(id);
}

// ---- Changes made elsewhere ----------------------------------------------------------------

// Whether a re-read of the first page has to wait: what it brings could not be applied now.
export function busy() {
  return loadingMore || adding || reloading;
}

// A re-read of the first page, begun now: its count and its items are applied only if nothing
// changed here and no reload started meanwhile (what it read may predate that).
export function beginCheck() {
  const generation = listGeneration;
  const changesBefore = localChanges;
  const current = () => generation === listGeneration && changesBefore === localChanges;
  return {
    limit: PAGE_REQUEST,
    // A count the answer carried (null: none).
    total(total) {
      if (current() && total !== null) {
        setServerTotal(total, true);
      }
    },
    // The page it read; false when it came too late to be applied.
    merge(items) {
      if (!current() || loadingMore) {
        return false;
      }
      mergeFirstPage(items);
      return true;
    },
  };
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
  let addedHere = 0;
  for (const item of page) {
    const shown = rows.get(item.id);
    if (shown) {
      view.showChangedText(shown, item.text);
      continue;
    }
    if (withheld.has(item.id)) {
      continue;
    }
    insertRow(view.render(item), item.id);
    addedHere += 1;
  }
  oldestId = rows.size === 0 ? null : Math.min(...rows.keys());
  if (complete) {
    hasMore = false;
  } else if (oldestId >= oldestInPage) {
    // No page beyond the first is shown, and the first is followed by more.
    hasMore = true;
  }
  if (addedHere > 0 || removed > 0) {
    updateListChrome();
    announce(changeSummary(addedHere, removed));
  }
}

function changeSummary(addedCount, removed) {
  const parts = [];
  if (addedCount > 0) {
    parts.push(addedCount === 1 ? "1 item added" : `${addedCount} items added`);
  }
  if (removed > 0) {
    parts.push(removed === 1 ? "1 item removed" : `${removed} items removed`);
  }
  return `${parts.join(", ")} by someone else.`;
}

// The change stream is open (`total`: the count it started with, if any).
export function streamStarted(total) {
  streamCounts = true;
  setServerTotal(total, true);
}

export function streamStopped() {
  streamCounts = false;
}

// One change from the stream: `type` created, updated or deleted, `data` its parsed payload.
export function change(type, data) {
  if (adding) {
    deferredEvents.push({ type, data });
    return;
  }
  applyChange(type, data);
}

function applyChange(type, data) {
  localChanges += 1;
  if (type === "deleted") {
    applyDeletion(data.id);
  } else if (data.item && Number.isSafeInteger(data.item.id)) {
    const item = data.item;
    const shown = rows.get(item.id);
    const pending = withheld.get(item.id);
    if (shown) {
      view.showChangedText(shown, item.text);
    } else if (pending) {
      view.setText(pending, item.text);
    } else if (type === "created" && !(hasMore && oldestId !== null && item.id < oldestId)) {
      // (An item below the pages shown arrives with its page.)
      addedSinceReload.add(item.id);
      insertRow(view.render(item), item.id);
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
  if (withheld.delete(id)) {
    // Deleted elsewhere while its undo was offered here: there is nothing left to undo.
    tell.withdrawn(id);
  }
  const li = rows.get(id);
  if (li) {
    dropRow(li, id);
    oldestId = rows.size === 0 ? null : Math.min(...rows.keys());
    updateListChrome();
    announce(changeSummary(0, 1));
  }
}
