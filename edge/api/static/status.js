// Status page: refreshes the server-rendered panel, sends Retry/Reprint/Release/Discard/Sync now with the token typed once per browser tab.
"use strict";
const body = document.body;
const panel = document.getElementById("panel");
const message = document.getElementById("message");
const tokenInput = document.getElementById("token");
const REFRESH_MS = 5000;

function authHeaders() {
  const token = sessionStorage.getItem("edge-token");
  return token ? { Authorization: "Bearer " + token } : {};
}

function say(text) {
  message.textContent = text;
}

async function refresh() {
  try {
    const response = await fetch(body.dataset.panel, { headers: authHeaders(), cache: "no-store" });
    if (response.ok) {
      panel.innerHTML = await response.text();
    } else if (response.status === 401) {
      say("Enter the API token to see the status.");
    }
  } catch (err) {
    say("Agent not reachable: " + err);
  }
}

function done(label, answer) {
  if (answer.run_id) return label + (answer.joined ? " joined the running recovery (run " : " started (recovery run ") + answer.run_id + ")";
  const ids = answer.job_ids || answer.released;
  return label + " done" + (ids ? " (jobs " + ids.join(", ") + ")" : "");
}

async function act(url, label) {
  if (!sessionStorage.getItem("edge-token")) {
    say("Enter the API token first: actions need it.");
    tokenInput.focus();
    return;
  }
  const response = await fetch(url, { method: "POST", headers: authHeaders() });
  const answer = await response.json().catch(() => ({}));
  say(response.ok ? done(label, answer) : label + " failed: " + (answer.reason || response.status));
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
  tokenInput.value = "";
  say("Token kept for this tab.");
  refresh();
});

panel.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  if (button.dataset.retry) act("/api/v1/jobs/" + encodeURIComponent(button.dataset.retry) + "/retry", "Retry of job " + button.dataset.retry);
  else if (button.dataset.reprint) act("/api/v1/orders/" + encodeURIComponent(button.dataset.reprint) + "/reprint", "Reprint");
  else if (button.dataset.release) act("/api/v1/jobs/" + encodeURIComponent(button.dataset.release) + "/release", "Release of job " + button.dataset.release);
  else if (button.dataset.releaseAll) act("/api/v1/jobs/release-held", "Release all");
  else if (button.dataset.sync) act("/api/v1/recovery/runs", "Sync");
  else if (button.dataset.mailRetry) act("/api/v1/alerts/outbox/" + encodeURIComponent(button.dataset.mailRetry) + "/retry", "Retry of mail " + button.dataset.mailRetry);
  else if (button.dataset.mailDiscard) {
    if (confirm("Discard mail " + button.dataset.mailDiscard + "? It will never be sent.")) act("/api/v1/alerts/outbox/" + encodeURIComponent(button.dataset.mailDiscard) + "/discard", "Discard of mail " + button.dataset.mailDiscard);
  }
  else if (button.dataset.discard) {
    if (confirm("Discard job " + button.dataset.discard + "? It will never print.")) act("/api/v1/jobs/" + encodeURIComponent(button.dataset.discard) + "/discard", "Discard of job " + button.dataset.discard);
  }
  else if (button.dataset.preview) showPreview(button.dataset.preview);
});

if (sessionStorage.getItem("edge-token")) say("Token set for this tab.");
refresh();
setInterval(refresh, REFRESH_MS);
