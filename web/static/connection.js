// Keeping up with the API. While the page is visible, the change stream (api/items/events) tells
// it each change as it is made; without the stream, it re-reads its first page every few seconds
// with If-None-Match. While the API cannot be reached, a banner says so and the page probes
// api/healthz until it answers. A hidden page holds no connection and asks nothing until shown.

import { UnavailableError, checkFirstPage, isHealthy } from "./api.js";
import * as list from "./list.js";
import { announce, byId, hooks } from "./page.js";

// Without the change stream, how often a visible page checks for changes made elsewhere (a 304
// when there are none).
const LIVE_CHECK_MS = 3000;
// After the stream was refused (or is not there), polling goes on and the stream is tried
// again this much later.
const STREAM_RETRY_MS = 30000;
// While the API cannot be reached, a visible page asks again this often, so it is back within
// two seconds of the API; a hidden page does not ask until it is shown.
const PROBE_FIRST_DELAY_MS = 1000;
const PROBE_MAX_DELAY_MS = 1500;

const banner = byId("banner");

// back(): the API answers again, after the list was reloaded and the stream reopened.
const [tell, notify] = hooks(["back"]);
export { notify };

export function start() {
  openStream();
  scheduleLiveCheck(LIVE_CHECK_MS);
}

// ---- Re-reading the first page -------------------------------------------------------------

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
  if (list.busy()) {
    // Asked again once that is done: soon when the stream asked (it will not ask again).
    scheduleLiveCheck(streamLive ? 250 : LIVE_CHECK_MS);
    return;
  }
  checking = true;
  checkAgain = false;
  let stale = false;
  const check = list.beginCheck();
  try {
    const answer = await checkFirstPage(check.limit, firstPageTag);
    check.total(answer.total);
    if (answer.changed) {
      const items = await answer.items();
      if (check.merge(items)) {
        firstPageTag = answer.tag;
      } else {
        stale = true;
      }
    }
  } catch (error) {
    if (error instanceof UnavailableError) {
      unreachable();
    }
    // Anything else (no answer at all, an error answer, a body cut short) waits for the next
    // check.
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

// ---- The change stream ---------------------------------------------------------------------

// While the stream is open, the page does not poll; it re-reads the first page only when the
// stream starts or says changes may have been missed (`ready`, `reset`).
let stream = null;
let streamLive = false;
let streamRetryTimer = null;

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
  list.streamStopped();
}

function onStreamStart(event) {
  const data = parseEventData(event);
  streamLive = true;
  list.streamStarted(data ? data.total : null);
  // Whatever changed before the stream started (or while it was away) comes with the list.
  if (liveTimer !== null) {
    clearTimeout(liveTimer);
    liveTimer = null;
  }
  checkForChanges();
}

function onStreamError() {
  streamLive = false;
  list.streamStopped();
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
  if (data) {
    list.change(event.type, data);
  }
}

// ---- The page is shown or hidden -----------------------------------------------------------

export function visibilityChanged() {
  if (document.visibilityState !== "visible") {
    // A page in the background holds no connection; it catches up when it is shown.
    closeStream();
    return;
  }
  if (unavailable) {
    probeNow();
  } else {
    openStream();
    scheduleLiveCheck(0);
  }
}

// ---- API unavailable: banner, then poll api/healthz with backoff until it answers ------------

let unavailable = false;
let probeTimer = null;
let probing = false;
let probeDelay = PROBE_FIRST_DELAY_MS;

// A request found the API unreachable.
export function unreachable() {
  if (!unavailable) {
    unavailable = true;
    banner.hidden = false;
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
    healthy = await isHealthy();
  } finally {
    probing = false;
  }
  if (!healthy) {
    scheduleProbe();
    return;
  }
  if (unavailable) {
    unavailable = false;
    banner.hidden = true;
    announce("The list can be reached again.");
  }
  list.loadFirstPage();
  openStream();
  tell.back();
}

function probeNow() {
  if (probeTimer !== null) {
    clearTimeout(probeTimer);
    probeTimer = null;
  }
  probe();
}

// "Retry now": probe at once, from the shortest delay.
export function retryNow() {
  probeDelay = PROBE_FIRST_DELAY_MS;
  probeNow();
}

// The browser is online again.
export function online() {
  if (unavailable) {
    probeNow();
  }
}

// Any real answer from the API (not a 502/503/504) ends an outage: probe now, which reloads the
// list. The backoff resets only when a real API call succeeds (2xx), not on an error answer
// (4xx, 500) nor on a healthy probe, so an API that is alive but keeps failing is not hammered.
export function answered(succeeded) {
  if (succeeded) {
    probeDelay = PROBE_FIRST_DELAY_MS;
  }
  if (unavailable) {
    probeNow();
  }
}
