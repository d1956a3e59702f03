// The new-item form: a length counter against the API's limit, the add itself with its
// Idempotency-Key, refusals in the user's words, and adds whose answer was lost, sent again once
// the list is back.

import {
  ApiError,
  TOO_MANY,
  TOO_MANY_MESSAGE,
  UnavailableError,
  createItem,
  newIdempotencyKey,
  textLimit as readTextLimit,
  withReference,
} from "./api.js";
import * as connection from "./connection.js";
import * as list from "./list.js";
import { byId, shorten } from "./page.js";

// The length counter appears once a text reaches this share of the limit.
const COUNTER_FROM = 0.9;

const el = {
  input: byId("item-text"),
  addButton: byId("add-button"),
  formError: byId("form-error"),
  counter: byId("char-count"),
};

// The longest text the API takes, once known.
let textLimit = null;
let adding = false;
// POSTs that got no real answer may still have been committed: each one's text and the
// Idempotency-Key it was sent with. Once the list is back the page sends them again with the same
// keys, and the API either stores each now or answers with what it stored the first time: never two.
let uncertainAdds = [];

export async function loadTextLimit() {
  textLimit = await readTextLimit();
  updateCounter();
}

export function loadTextLimitIfUnknown() {
  if (textLimit === null) {
    loadTextLimit();
  }
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

export function handleInput() {
  if (el.formError.textContent !== "") {
    showFormError("", false);
  }
  updateCounter();
}

function showFormError(message, invalid) {
  el.formError.textContent = message;
  el.input.setAttribute("aria-invalid", invalid ? "true" : "false");
}

// What to say when the API refused an add, in the user's words.
function addFailure(error) {
  if (error.status === 400) {
    return "Write something first: an item cannot be empty.";
  }
  if (error.status === 413 || error.status === 422) {
    return "That text is too long for an item.";
  }
  if (error.status === TOO_MANY) {
    return `Not saved: ${TOO_MANY_MESSAGE}`;
  }
  return `The item was not saved. Try again in a moment${withReference(error)}.`;
}

export async function handleSubmit(event) {
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
  list.addSent();
  try {
    // The API trims and validates; its `detail` is what the user sees (e.g. for blank text).
    const { item } = await createItem(text, key);
    if (el.input.value === text) {
      el.input.value = "";
    }
    list.added(item);
  } catch (error) {
    if (error instanceof UnavailableError) {
      // A request that timed out (or a 503 that could not confirm the commit) may have been
      // stored all the same: the key settles it once the list is back.
      uncertainAdds.push({ text, key });
      connection.unreachable();
      showFormError(
        "The list cannot be reached right now, so your item may not be saved yet. This page will save it as soon as the list is back.",
        false,
      );
    } else if (error instanceof ApiError) {
      showFormError(addFailure(error), error.status < 500 && error.status !== TOO_MANY);
    } else {
      showFormError("Something went wrong; the item was not saved.", false);
      throw error;
    }
  } finally {
    adding = false;
    el.addButton.disabled = false;
    el.input.focus();
    list.addAnswered();
  }
}

// The list is back: adds whose answer was lost are sent again, each with its own key.
export function resendUncertainAdds() {
  if (uncertainAdds.length > 0) {
    finishUncertainAdds();
  }
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
    const { item, replayed } = await createItem(text, key);
    if (el.input.value === text) {
      el.input.value = "";
    }
    list.added(item);
    showFormError(
      replayed ? `Your item “${shown}” was saved after all.` : `Your item “${shown}” was saved now that the list is back.`,
      false,
    );
  } catch (error) {
    if (error instanceof UnavailableError) {
      // Still unsettled: the next recovery sends it once more.
      uncertainAdds.push({ text, key });
    } else if (error instanceof ApiError) {
      showFormError(addFailure(error), error.status < 500 && error.status !== TOO_MANY);
    } else {
      throw error;
    }
  }
}
