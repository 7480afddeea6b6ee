// Status page: refreshes the server-rendered panel, sends Retry/Reprint/Release/Discard/Sync now with the token typed once per browser tab.
"use strict";
const body = document.body;
const panel = document.getElementById("panel");
const message = document.getElementById("message");
const staleNotice = document.getElementById("stale");
const tokenInput = document.getElementById("token");
const REFRESH_MS = Number(body.dataset.refreshMs) || 5000;
const ANSWER_MS = Math.max(2 * REFRESH_MS, 1000); // a refresh with no answer by then has failed (a hung agent)
let upToDate = Date.now(); // the data on screen is from then: the server rendered it with the page
// A button pressed on the panel and let go after a refresh replaced it gets no click: the browser fires one only when
// press and release meet the same element. A panel a refresh brings meanwhile waits for the release.
let pressing = false;
let waitingPanel = null;
// A refresh moves rows: a ticket released elsewhere takes its row away and those below move up, a new order pushes the
// last orders down. A tap aimed just before lands on another ticket's button. Deferring the swap while a pointer moves
// cannot help a finger (a touch screen has no hover to see it coming), so a button a refresh just put where another
// one was ignores a tap for SETTLE_MS, its row marked, long enough to see that the row under the finger changed.
const SETTLE_MS = 1000;
const movedAt = new WeakMap(); // button -> when a refresh put it where another button was

// A token the box refused (401, or 429 from its brake on guessing): the refreshes stop sending it until another is
// typed. Sent every 5 s for good, it kept a PC that was also the till braked with nobody typing (the verify81 probe, F1).
let refusedToken = null;
let tokenInFlight = null; // the token of the request for the panel under way

function authHeaders() {
  const token = sessionStorage.getItem("edge-token");
  return token ? { Authorization: "Bearer " + token } : {};
}

// Guest text (an order number) in the page's sentences, between a first-strong isolate and its end: a right-to-left
// override in it (U+202E) ran on into the page's words after it ("Reprinted (6 boj)"). Its own isolate controls go, so
// the end is ours; a confirm() dialog shows the isolates as they are, the message line as a <bdi> each.
function guest(text) {
  return "\u2068" + String(text).replace(/[\u2066-\u2069]/g, "") + "\u2069";
}

function say(text) {
  const bdi = (part) => Object.assign(document.createElement("bdi"), { textContent: part });
  message.replaceChildren(...text.split(/\u2068([^\u2069]*)\u2069/).map((part, i) => (i % 2 ? bdi(part) : part)));
}

function clockTime(ms) {
  // In agent.timezone, as every time the server writes; the browser's own zone when the agent has none.
  const options = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  if (body.dataset.zone) options.timeZone = body.dataset.zone;
  return new Date(ms).toLocaleTimeString("en-GB", options);
}

function outOfDate(why) {
  // Whatever the panel shows is as old as the last good refresh: say so, and grey it, until one succeeds again.
  staleNotice.textContent = "Not up to date since " + clockTime(upToDate) + ": " + why;
  staleNotice.hidden = false;
  panel.classList.add("stale");
}

function current() {
  upToDate = Date.now();
  staleNotice.textContent = "";
  staleNotice.hidden = true;
  panel.classList.remove("stale");
}

async function refresh() {
  const token = sessionStorage.getItem("edge-token");
  if (token && token === refusedToken) return; // the page says so already; a new token typed is sent
  // A token typed is sent at once: a timed refresh meanwhile would send it again before its answer came (twice refused)
  if (token && token === tokenInFlight) return;
  tokenInFlight = token;
  try {
    const response = await fetch(body.dataset.panel, {
      headers: authHeaders(),
      cache: "no-store",
      signal: AbortSignal.timeout(ANSWER_MS),
    });
    if (response.ok) {
      const html = await response.text();
      if (pressing) waitingPanel = html;
      else showPanel(html);
      current();
    } else if (response.status === 401) {
      refusedToken = token;
      // A token typed and refused is not "none typed" (the api80 probe, F5): the person checks what they typed.
      say(
        sessionStorage.getItem("edge-token")
          ? "The API token entered was refused: check it (api.token on the box)."
          : "Enter the API token to see the status.",
      );
      if (panel.querySelector("#summary")) outOfDate("the API token is needed");
    } else if (response.status === 429) {
      refusedToken = token;
      // Too many wrong tokens from this computer: the box looks at none of them for a while (its brake on guessing).
      say(
        "Too many wrong API tokens from this computer: check the token (api.token on the box) and enter it again in " +
          response.headers.get("Retry-After") +
          " s.",
      );
      if (panel.querySelector("#summary")) outOfDate("the API token is needed");
    } else {
      const answer = await response.json().catch(() => ({}));
      outOfDate("the agent answered " + response.status + (answer.reason ? " (" + answer.reason + ")" : ""));
    }
  } catch (err) {
    const timedOut = err && (err.name === "TimeoutError" || err.name === "AbortError");
    outOfDate(timedOut ? "no answer from the agent within " + ANSWER_MS / 1000 + " s" : "agent not reachable");
  } finally {
    if (tokenInFlight === token) tokenInFlight = null;
  }
}

// A button is the one that was there if a tap on it sends the same request: Release all's list of held ids changes
// with every ticket held or released, and it is still Release all (its dialog counts the ids it sends).
function buttonKey(button) {
  return actionFor(button)?.url ?? "preview " + button.dataset.preview;
}

function showPanel(html) {
  const before = [...panel.querySelectorAll("button")].map((b) => ({ key: buttonKey(b), box: b.getBoundingClientRect() }));
  panel.innerHTML = html;
  const now = Date.now();
  const marked = [];
  for (const button of panel.querySelectorAll("button")) {
    const box = button.getBoundingClientRect();
    const key = buttonKey(button);
    // Any overlap, not its centre: a finger aims anywhere on a button, and rows that moved by part of a row put
    // another button over the edge of the one aimed at, its centre outside it.
    const overlaps = (b) => box.left < b.right && b.left < box.right && box.top < b.bottom && b.top < box.bottom;
    if (before.some((b) => b.key !== key && overlaps(b.box))) {
      movedAt.set(button, now);
      marked.push(button.closest("tr") || button);
    }
  }
  for (const row of marked) row.classList.add("moved");
  showSending();
  setTimeout(() => {
    for (const row of marked) row.classList.remove("moved");
  }, SETTLE_MS);
}

async function refreshForever() {
  // One refresh at a time: a hung agent never piles up requests.
  await refresh();
  setTimeout(refreshForever, REFRESH_MS);
}

function jobs(ids) {
  return (ids.length === 1 ? "job " : "jobs ") + ids.join(", ");
}

function done(label, answer, stay = 0) {
  if (answer.run_id) return label + (answer.joined ? " joined the running recovery (run " : " started (recovery run ") + answer.run_id + ")";
  if (answer.job_ids) {
    // A COPY already there (pressed a moment before, elsewhere) is not made again: the answer says which and why.
    const made = answer.job_ids.length ? "Reprinted " + label + " (" + jobs(answer.job_ids) + ")" : label + " not reprinted";
    return answer.reason ? made + "; " + answer.reason : made;
  }
  if (!answer.released) return label + " done";
  const parts = [label + (answer.released.length ? " done (" + jobs(answer.released) + ")" : ": nothing released")];
  if (answer.not_released.length) parts.push(jobs(answer.not_released) + " no longer held");
  // Held after the person read the count (those without a printer were named in the dialog): not printed unasked.
  const uncounted = answer.still_held - stay;
  if (uncounted > 0) parts.push((uncounted === 1 ? "1 held ticket" : uncounted + " held tickets") + " not counted stay held");
  return parts.join("; ");
}

// Actions sent and not answered yet (their urls): the same one again meanwhile (an impatient second click) is not
// sent twice, and its buttons stay off, also those a refresh brings. Until the request really ended, not until the
// page stops waiting: a reprint the agent answers late (a stalled SD card) is still made, and a second press made a
// second COPY. Reprint is not idempotent, so the guard lasts as long as the request.
const sending = new Set();

function showSending() {
  for (const button of panel.querySelectorAll("button")) {
    const action = actionFor(button);
    if (action) button.disabled = sending.has(action.url);
  }
}

async function act(action) {
  if (!sessionStorage.getItem("edge-token")) {
    say("Enter the API token first: actions need it.");
    tokenInput.focus();
    return;
  }
  const { url, label } = action;
  if (sending.has(url)) return;
  sending.add(url);
  showSending();
  const slow = setTimeout(() => say(label + " not confirmed yet: the agent has not answered; waiting for it (the button stays off until it does)"), ANSWER_MS);
  let response;
  try {
    const request = { method: "POST", headers: authHeaders() };
    if (action.body) {
      request.headers["Content-Type"] = "application/json";
      request.body = JSON.stringify(action.body);
    }
    response = await fetch(url, request);
  } catch (err) {
    say(label + " not confirmed: no answer from the agent (look again once the page is up to date)");
    return;
  } finally {
    clearTimeout(slow);
    sending.delete(url);
    showSending();
  }
  const answer = await response.json().catch(() => ({}));
  say(response.ok ? done(label, answer, action.stay) : label + " failed: " + (answer.reason || response.status));
  refresh();
}

async function showPreview(jobId) {
  // A ticket carries the guest's name and notes: its text is never public, so it needs the token.
  if (!sessionStorage.getItem("edge-token")) {
    say("Enter the API token first: ticket text is not public.");
    tokenInput.focus();
    return;
  }
  const response = await fetch("/api/v1/jobs/" + encodeURIComponent(jobId) + "/preview", { headers: authHeaders() });
  const dialog = document.getElementById("preview");
  dialog.querySelector("pre").textContent = response.ok ? await response.text() : "No preview: " + response.status;
  dialog.showModal();
}

document.getElementById("token-box").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("edge-token", tokenInput.value.trim());
  refusedToken = null; // typed again, even the same: a person's try, sent once
  tokenInput.value = "";
  say("Token kept for this tab.");
  refresh();
});

panel.addEventListener("pointerdown", () => {
  pressing = true;
});
for (const end of ["pointerup", "pointercancel"]) {
  document.addEventListener(end, () => {
    // After the click this release makes (dispatched in the same task), not before it.
    setTimeout(() => {
      pressing = false;
      if (waitingPanel !== null) showPanel(waitingPanel);
      waitingPanel = null;
    }, 0);
  });
}

function jobUrl(id, verb) {
  return "/api/v1/jobs/" + encodeURIComponent(id) + "/" + verb;
}

// What a button sends: its url, the words for it ("the kitchen ticket of A-1042", as staff name it), the question to
// ask first if any; null for a button that sends nothing (a ticket's preview).
function actionFor(button) {
  const data = button.dataset;
  const what = "the " + data.what + " of " + guest(data.number); // a job's row
  if (data.retry) return { url: jobUrl(data.retry, "retry"), label: "Retry of " + what + " (job " + data.retry + ")" };
  if (data.jobReprint) return { url: jobUrl(data.jobReprint, "reprint"), label: what }; // that ticket, not the order
  // The row's order by its id, said so: where a till's integer ids meet its daily numbers, an old order's id may be
  // today's ticket number too, and the agent asks which one is meant (409) rather than guess.
  if (data.reprint) return { url: "/api/v1/orders/" + encodeURIComponent(data.reprint) + "/reprint?by=id", label: guest(data.number) };
  if (data.release) return { url: jobUrl(data.release, "release"), label: "Release of " + what + " (job " + data.release + ")" };
  if (data.releaseAll) {
    // Every held ticket prints, also those not listed: say how many before a tap sends a backlog to the kitchen.
    // The ids counted go with the request: a ticket held after this look is not printed with them.
    const ids = data.releaseAll.split(" ").filter(Boolean).map(Number);
    const stay = Number(data.held) - ids.length;
    const question = "Print " + (ids.length === 1 ? "1 held ticket" : ids.length + " held tickets") + " now?"
      + (stay > 0 ? " (" + stay + " without a configured printer stay held.)" : "");
    return { url: "/api/v1/jobs/release-held", label: "Release all", body: { job_ids: ids }, stay, question };
  }
  if (data.sync) return { url: "/api/v1/recovery/runs", label: "Sync" };
  const mail = "/api/v1/alerts/outbox/" + encodeURIComponent(data.mailRetry || data.mailDiscard);
  if (data.mailRetry) return { url: mail + "/retry", label: "Retry of mail " + data.mailRetry };
  if (data.mailDiscard) {
    return { url: mail + "/discard", label: "Discard of mail " + data.mailDiscard, question: "Discard mail " + data.mailDiscard + "? It will never be sent." };
  }
  if (data.discard) {
    const question = "Discard the " + data.what + " of order " + guest(data.number) + "? It will never print.";
    return { url: jobUrl(data.discard, "discard"), label: "Discard of " + what + " (job " + data.discard + ")", question };
  }
  return null;
}

panel.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  // People double-click buttons on web pages: the second click of a double click (detail 2, 3 for a triple) is not
  // a second reprint or release. A click from the keyboard has detail 0.
  if (!button || event.detail > 1) return;
  if (Date.now() - (movedAt.get(button) ?? -Infinity) < SETTLE_MS) {
    say("Not done: that row just moved under your finger. Look again, then tap the one you mean.");
    return;
  }
  const action = actionFor(button);
  if (action) {
    if (!action.question || confirm(action.question)) act(action);
  } else if (button.dataset.preview) showPreview(button.dataset.preview);
});

if (sessionStorage.getItem("edge-token")) say("Token set for this tab.");
refreshForever();
