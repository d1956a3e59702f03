// Deleting with undo. The row leaves at once and a toast offers it back (its button, or Ctrl+Z /
// Cmd+Z outside a text field); the DELETE is sent only once the undo window has passed (or the
// page is being left), so an undone delete never reached the server and the item keeps its id and
// creation time.

import {
  ApiError,
  TOO_MANY,
  TOO_MANY_MESSAGE,
  UnavailableError,
  deleteItem,
  deleteItemOnLeave,
} from "./api.js";
import * as connection from "./connection.js";
import * as list from "./list.js";
import { announce, byId, shorten } from "./page.js";
import { clearRowError, focusDelete, showRowError, textOf } from "./rows.js";

// How long a delete can be undone: the DELETE is sent only when this has passed.
const UNDO_MS = 7000;

const el = {
  toast: byId("toast"),
  toastText: byId("toast-text"),
};

const pending = new Map(); // item id -> {li, timer}
let toastFor = null; // the item id the toast offers to restore

export function deleteWithUndo(li) {
  const id = Number(li.dataset.id);
  const text = textOf(li);
  clearRowError(li);
  const timer = setTimeout(() => sendDelete(id), UNDO_MS);
  pending.set(id, { li, timer });
  list.withhold(li, id);
  showToast(id, text);
  announce(`Deleted “${shorten(text, 60)}”. To undo, press Control Z or the Undo button.`);
}

// Undoes the delete the toast offers, if any.
export function undoLatest() {
  undoDelete(toastFor);
}

export function handleKeydown(event) {
  const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
  if (toastFor !== null && !typing && (event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undoDelete(toastFor);
  }
}

function undoDelete(id) {
  const entry = pending.get(id);
  if (!entry) {
    return;
  }
  clearTimeout(entry.timer);
  pending.delete(id);
  hideToast(id);
  list.restore(entry.li, id);
  focusDelete(entry.li);
  announce(`Restored “${shorten(textOf(entry.li), 60)}”.`);
}

async function sendDelete(id) {
  const entry = pending.get(id);
  if (!entry) {
    return;
  }
  hideToast(id);
  let deletedHere = true;
  try {
    await deleteItem(id);
  } catch (error) {
    // A 404: deleted elsewhere already, which the count has seen or will see.
    deletedHere = false;
    if (!(error instanceof ApiError && error.status === 404)) {
      // Not deleted: the item comes back, with the reason on its row.
      pending.delete(id);
      list.restore(entry.li, id);
      const reason = error instanceof UnavailableError
        ? "Not deleted: the list cannot be reached right now. Try again in a moment."
        : error instanceof ApiError && error.status === TOO_MANY
          ? `Not deleted: ${TOO_MANY_MESSAGE}`
          : "Not deleted: something went wrong. Try again.";
      showRowError(entry.li, reason);
      announce(`“${shorten(textOf(entry.li), 60)}” was not deleted.`);
      if (error instanceof UnavailableError) {
        connection.unreachable();
      }
      return;
    }
  }
  if (!pending.delete(id)) {
    // The stream reported the deletion first, and counted it.
    deletedHere = false;
  }
  list.deleteSettled(id, deletedHere);
}

// Leaving the page ends the undo window: what is still pending is sent now.
export function sendPending() {
  for (const [id, entry] of pending) {
    clearTimeout(entry.timer);
    deleteItemOnLeave(id);
    list.release(id);
  }
  pending.clear();
}

// The item was deleted elsewhere while its undo was offered: there is nothing left to undo.
export function withdrawn(id) {
  const entry = pending.get(id);
  if (entry) {
    clearTimeout(entry.timer);
    pending.delete(id);
    hideToast(id);
  }
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
