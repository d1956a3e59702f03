// The rows of the list (#items): an item's row (text, relative time, Edit and Delete), long texts
// collapsed behind "Show more", editing in place, a row's error, and where a row goes and where
// focus goes when one leaves. Item text is only ever written with textContent, so it can never
// become markup.

import { ApiError, TOO_MANY, TOO_MANY_MESSAGE, UnavailableError, updateItem } from "./api.js";
import { announce, byId, hooks, shorten } from "./page.js";

// Longer texts are shown collapsed to a few lines, with "Show more".
const LONG_TEXT_CHARS = 400;
const LONG_TEXT_LINES = 6;
const CLOCK_TICK_MS = 30000;

const list = byId("items");
const input = byId("item-text");

// deleteRequested(li): its Delete was pressed; saved(id): an edit was stored; gone(li, id): the
// item being edited was deleted elsewhere; unreachable(): the API could not be reached.
const [tell, notify] = hooks(["deleteRequested", "saved", "gone", "unreachable"]);
export { notify };

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

export function refreshTimes() {
  for (const time of list.querySelectorAll("time[datetime]")) {
    time.textContent = relativeTime(new Date(time.dateTime));
  }
}

export function keepTimesFresh() {
  setInterval(refreshTimes, CLOCK_TICK_MS);
}

// ---- A row ---------------------------------------------------------------------------------

export function render(item) {
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

export function textOf(li) {
  return li.querySelector(".item-text").textContent;
}

export function setText(li, text) {
  li.querySelector(".item-text").textContent = text;
  labelRow(li, text);
  fitLongText(li, text);
}

// Text changed elsewhere; a row being edited here keeps what its user is writing.
export function showChangedText(li, text) {
  if (!li.classList.contains("is-editing") && textOf(li) !== text) {
    setText(li, text);
  }
}

export function markNew(li) {
  li.classList.add("is-new");
}

export function focusDelete(li) {
  li.querySelector(".item-delete").focus();
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

export function showRowError(li, message) {
  let error = li.querySelector(".item-error");
  if (!error) {
    error = document.createElement("p");
    error.className = "item-error";
    li.querySelector(".item-body").append(error);
  }
  error.textContent = message;
}

export function clearRowError(li) {
  const error = li.querySelector(".item-error");
  if (error) {
    error.remove();
  }
}

// ---- Rows in the list ----------------------------------------------------------------------

// Puts a row in its place in the list (newest first).
export function insert(li, id) {
  const after = Array.from(list.children).find((row) => Number(row.dataset.id) < id);
  list.insertBefore(li, after || null);
}

// Adds rows at the top or the bottom of the list, in their order; returns the first of them.
export function place(lis, where) {
  const fragment = document.createDocumentFragment();
  for (const li of lis) {
    fragment.append(li);
  }
  const first = fragment.firstElementChild;
  if (where === "top") {
    list.prepend(fragment);
  } else {
    list.append(fragment);
  }
  return first;
}

// Removes every row but those with the ids in `keep`.
export function keepOnly(keep) {
  for (const child of Array.from(list.children)) {
    if (!keep.has(Number(child.dataset.id))) {
      child.remove();
    }
  }
}

// A row deleted here leaves. Keyboard users keep their place: focus moves to the neighbouring
// item's Delete, or to the field.
export function removeDeleted(li) {
  const next = li.nextElementSibling || li.previousElementSibling;
  const hadFocus = li.contains(document.activeElement) || document.activeElement === document.body;
  li.remove();
  if (hadFocus) {
    (next ? next.querySelector(".item-delete") : input).focus();
  }
}

// A row that left by a change made elsewhere: focus, if it was there, moves to a neighbour (or
// to the field), never to the page body.
export function removeGone(li) {
  const next = li.nextElementSibling || li.previousElementSibling;
  const hadFocus = li.contains(document.activeElement);
  li.remove();
  if (hadFocus) {
    (next ? next.querySelector("button") : input).focus();
  }
}

// After the last page "Load more" goes: keyboard focus moves on to the first row it brought.
export function focusAfterLastPage(firstNew) {
  const target = firstNew || list.lastElementChild;
  (target ? target.querySelector("button") : input).focus();
}

export function markBusy(busy) {
  if (busy) {
    list.setAttribute("aria-busy", "true");
  } else {
    list.removeAttribute("aria-busy");
  }
}

// ---- The DOM's events in the list ----------------------------------------------------------

export function handleClick(event) {
  const button = event.target.closest("button");
  if (!button || !list.contains(button)) {
    return;
  }
  const li = button.closest(".item");
  if (button.classList.contains("item-delete")) {
    tell.deleteRequested(li);
  } else if (button.classList.contains("item-edit")) {
    startEditing(li);
  } else if (button.classList.contains("item-cancel")) {
    stopEditing(li);
  } else if (button.classList.contains("item-more")) {
    setCollapsed(li, button.getAttribute("aria-expanded") === "true");
  }
}

export function handleKeydown(event) {
  if (event.key === "Escape" && event.target.classList.contains("item-edit-field")) {
    event.preventDefault();
    stopEditing(event.target.closest(".item"));
  }
}

// ---- Editing a row in place ----------------------------------------------------------------

function startEditing(li) {
  if (li.classList.contains("is-editing")) {
    return;
  }
  const text = textOf(li);
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

export async function handleSubmit(event) {
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
    const item = await updateItem(id, field.value);
    tell.saved(id);
    setText(li, item.text);
    stopEditing(li);
    announce(`Saved “${shorten(item.text, 60)}”.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      tell.gone(li, id);
      announce("That item was deleted elsewhere.");
      return;
    }
    field.setAttribute("aria-invalid", error instanceof ApiError && error.status < 500 ? "true" : "false");
    showRowError(li, editFailure(error));
    if (error instanceof UnavailableError) {
      tell.unreachable();
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
  if (error instanceof ApiError && error.status === TOO_MANY) {
    return `Not saved: ${TOO_MANY_MESSAGE}`;
  }
  return "Not saved: something went wrong. Try again.";
}
