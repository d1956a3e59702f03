// The items page: lists, adds, edits and deletes items through the items API under api/ (same
// origin), and follows changes made elsewhere through its change stream. This entry module wires
// the parts together: which part hears what another one learns, the DOM's events, and start-up.
// Nothing in the page needs inline script or style, so a strict Content-Security-Policy holds.

import * as addForm from "./add-form.js";
import * as api from "./api.js";
import * as connection from "./connection.js";
import * as list from "./list.js";
import { byId } from "./page.js";
import * as rows from "./rows.js";
import * as undo from "./undo.js";

api.notify({ answered: connection.answered, total: list.countFromApi });
list.notify({ unreachable: connection.unreachable, loaded: addForm.resendUncertainAdds, withdrawn: undo.withdrawn });
rows.notify({
  deleteRequested: undo.deleteWithUndo,
  saved: list.changedHere,
  gone: list.removeRow,
  unreachable: connection.unreachable,
});
connection.notify({ back: addForm.loadTextLimitIfUnknown });

const input = byId("item-text");
const items = byId("items");

byId("add-form").addEventListener("submit", addForm.handleSubmit);
input.addEventListener("input", addForm.handleInput);
items.addEventListener("click", rows.handleClick);
items.addEventListener("submit", rows.handleSubmit);
items.addEventListener("keydown", rows.handleKeydown);
byId("toast-undo").addEventListener("click", () => undo.undoLatest());
document.addEventListener("keydown", undo.handleKeydown);
window.addEventListener("pagehide", () => undo.sendPending());
byId("load-more").addEventListener("click", () => list.loadMore());
byId("back-to-top").addEventListener("click", () => list.backToTop());
byId("list-retry").addEventListener("click", () => list.loadFirstPage());
byId("retry-now").addEventListener("click", () => connection.retryNow());
window.addEventListener("online", () => connection.online());
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    rows.refreshTimes();
  }
  connection.visibilityChanged();
});
rows.keepTimesFresh();

// Touch screens get no focus on load: it would open the on-screen keyboard over the list.
if (!window.matchMedia("(pointer: coarse)").matches) {
  input.focus();
}
list.loadFirstPage();
addForm.loadTextLimit();
connection.start();
