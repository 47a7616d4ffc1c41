// The Gatehouse portal: a client of /api/v1 and nothing else. The session is an HttpOnly cookie
// this script cannot read; the CSRF token the sign-in answers goes with every change and lives
// in this tab's sessionStorage. Everything shown is set with textContent (no HTML from data).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { me: null, csrf: sessionStorage.getItem("gh-csrf") || "", revealTimer: null };

function say(text) { $("status").textContent = text || ""; }

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch("/api/v1" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && path !== "/portal/login") { signedOut(); }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.statusText;
    const error = new Error(message);
    error.status = response.status;
    error.question = data && data.error ? data.error.question : undefined;
    throw error;
  }
  return data;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function button(label, onClick, secondary) {
  const b = el("button", label, { type: "button" });
  if (secondary) b.className = "secondary";
  b.addEventListener("click", onClick);
  return b;
}

function cell(row, label, content) {
  const td = el("td", typeof content === "string" ? content : undefined, { "data-label": label });
  if (content instanceof Node) td.append(content);
  row.append(td);
  return td;
}

// --- sign in and out ------------------------------------------------------------------------

function signedOut() {
  state.me = null;
  state.csrf = "";
  sessionStorage.removeItem("gh-csrf");
  for (const id of ["nav", "who", "page-access", "page-requests", "page-inbox", "page-sessions", "page-admin"]) $(id).hidden = true;
  $("signin").hidden = false;
  $("signin-user").focus();
}

async function signedIn() {
  const session = await api("GET", "/portal/session");
  if (!session.signed_in) { signedOut(); return; }
  state.me = { name: session.user, groups: session.groups, may: session.may || [] };
  $("admin-link").hidden = state.me.may.length === 0;
  $("user").textContent = state.me.name;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  await route();
}

// A sign-in plugin (the TOTP second factor) may ask a question after the password: the form
// shows it and signs in again with the password and every answer so far.
const signin = { answers: {}, key: null };

function resetSignin() {
  signin.answers = {};
  signin.key = null;
  $("signin-question").hidden = true;
  $("signin-answer").value = "";
  $("signin-answer").required = false;
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  if (signin.key) signin.answers[signin.key] = $("signin-answer").value;
  try {
    const answer = await api("POST", "/portal/login", {
      user: $("signin-user").value, password: $("signin-password").value, answers: signin.answers,
    });
    state.csrf = answer.csrf_token;
    sessionStorage.setItem("gh-csrf", state.csrf);
    $("signin-password").value = "";
    resetSignin();
    await signedIn();
  } catch (e) {
    if (e.question) {
      signin.key = e.question.key;
      $("signin-prompt").textContent = e.question.prompt.trim().replace(/:$/, "");
      $("signin-answer").type = e.question.echo ? "text" : "password";
      $("signin-answer").value = "";
      $("signin-answer").required = true;
      $("signin-question").hidden = false;
      $("signin-answer").focus();
      return;
    }
    $("signin-error").textContent = e.message;
    if (signin.key && e.status === 401) {
      // A refused answer (a wrong or used code): ask again, the password stays.
      delete signin.answers[signin.key];
      $("signin-answer").value = "";
      $("signin-answer").focus();
    } else {
      resetSignin();
      $("signin-password").focus();
    }
  }
});

// A new user name or password starts the sign-in over.
for (const id of ["signin-user", "signin-password"]) $(id).addEventListener("input", resetSignin);

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/portal/logout"); } catch (e) { /* ended anyway */ }
  signedOut();
  say("Signed out.");
});

// --- pages ----------------------------------------------------------------------------------

async function route() {
  if (!state.me) return;
  const page = (location.hash.replace(/^#\//, "") || "access").split("?")[0];
  for (const name of ["access", "requests", "inbox", "sessions", "admin"]) {
    $("page-" + name).hidden = name !== page;
    const link = document.querySelector(`nav a[data-page="${name}"]`);
    if (name === page) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  say("");
  try {
    if (page === "access") await showAccess();
    if (page === "requests") await showRequests();
    if (page === "inbox") await showInbox();
    if (page === "sessions") await showSessions();
    if (page === "admin") await showAdmin();
    await badge();
  } catch (e) {
    say(e.message);
  }
}

window.addEventListener("hashchange", route);

async function badge() {
  const inbox = await api("GET", "/inbox");
  const b = $("badge");
  b.hidden = inbox.count === 0;
  b.textContent = String(inbox.count);
  b.setAttribute("aria-label", `${inbox.count} waiting for you`);
  return inbox;
}

const WAYS = { now: "now", request: "after approval" };

async function showAccess() {
  const q = $("access-search").value.trim();
  const entries = await api("GET", "/access" + (q ? "?q=" + encodeURIComponent(q) : ""));
  const rows = $("access-rows");
  rows.replaceChildren();
  for (const entry of entries) {
    const tr = el("tr");
    cell(tr, "Target", entry.target);
    for (const [label, way] of [["SSH", entry.ssh], ["RDP", entry.rdp], ["Password", entry.password], ["Key", entry.private_key]]) {
      cell(tr, label, way ? WAYS[way] || way : "—");
    }
    const actions = cell(tr, "Actions", "");
    const ways = { session: entry.ssh || entry.rdp, password: entry.password, private_key: entry.private_key };
    if (Object.values(ways).some((w) => w === "request")) {
      actions.append(button("Request…", () => openRequest(entry.target, ways)));
    }
    rows.append(tr);
  }
  say(entries.length > 0 ? "" : q ? "No target matches." : "You have no access yet.");
}

let searchTimer = null;
$("access-search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => showAccess().catch((e) => say(e.message)), 250);
});

function openRequest(target, ways) {
  $("request-target").textContent = target;
  $("request-form").dataset.target = target;
  const select = $("request-access");
  for (const option of select.options) option.disabled = ways[option.value] !== "request";
  const first = [...select.options].find((o) => !o.disabled);
  if (first) select.value = first.value;
  $("request-error").textContent = "";
  $("request-form").hidden = false;
  $("request-reason").focus();
}

$("request-close").addEventListener("click", () => { $("request-form").hidden = true; });

$("request-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {
    target: $("request-form").dataset.target,
    access: $("request-access").value,
    reason: $("request-reason").value,
    emergency: $("request-emergency").checked,
  };
  if ($("request-ticket").value.trim()) body.ticket = $("request-ticket").value.trim();
  if ($("request-minutes").value) body.duration_minutes = Number($("request-minutes").value);
  try {
    const created = await api("POST", "/requests", body);
    $("request-form").hidden = true;
    $("request-reason").value = "";
    location.hash = "#/requests";
    say(`Request ${created.id} is ${created.state.replace(/_/g, " ")}.`);
  } catch (e) {
    $("request-error").textContent = e.message;
  }
});

function until(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((Date.parse(iso) - Date.now()) / 1000));
  const m = Math.floor(seconds / 60);
  return m > 0 ? `${m} min ${seconds % 60} s` : `${seconds} s`;
}

async function showRequests() {
  const list = await api("GET", "/requests");
  const mine = list.requests.filter((r) => r.requester === state.me.name);
  const rows = $("request-rows");
  rows.replaceChildren();
  for (const r of mine) {
    const tr = el("tr", undefined, { "data-request": r.id });
    cell(tr, "Request", r.id);
    cell(tr, "Target", r.target);
    cell(tr, "Access", r.access.replace(/_/g, " "));
    cell(tr, "State", r.state.replace(/_/g, " "));
    cell(tr, "Window ends", r.window_end ? new Date(r.window_end).toLocaleString() : "");
    const actions = cell(tr, "Actions", "");
    if (r.state === "pending_approval") {
      actions.append(button("Withdraw", () => act(`/requests/${r.id}/cancel`, {}, "Withdrawn."), true));
    }
    if (r.access === "session" && (r.state === "available" || r.state === "checked_out")) {
      actions.append(button("Connect", () => launch(r)));
    }
    if (r.access !== "session" && (r.state === "available" || r.state === "checked_out")) {
      actions.append(button("Check out", () => checkOut(r)));
    }
    if (r.access !== "session" && r.state === "checked_out") {
      actions.append(button("Check in", () => act(`/requests/${r.id}/checkin`, {}, "Checked in."), true));
    }
    rows.append(tr);
  }
  if (mine.length === 0) say("You have no requests.");
  else if ($("status").textContent === "You have no requests.") say("");
}

async function act(path, body, done) {
  try {
    await api("POST", path, body);
    hideReveal();
    await route();
    say(done);
  } catch (e) {
    say(e.message);
  }
}

function hideReveal() {
  clearInterval(state.revealTimer);
  $("reveal-secret").textContent = "";
  $("reveal").hidden = true;
}

async function checkOut(r) {
  try {
    const released = await api("POST", `/requests/${r.id}/credential`, {});
    const secret = released.password || released.private_key || "";
    $("reveal-target").textContent = released.target;
    let left = 30;
    const show = () => {
      $("reveal-secret").textContent = secret;
      left = 30;
    };
    show();
    $("reveal").hidden = false;
    $("reveal-again").onclick = show;
    clearInterval(state.revealTimer);
    const tick = () => {
      $("reveal-hide").textContent = String(left);
      $("reveal-window").textContent = until(released.window_end);
      if (left <= 0) $("reveal-secret").textContent = "•".repeat(12);
      left = Math.max(0, left - 1);
    };
    tick();
    state.revealTimer = setInterval(tick, 1000);
    await showRequests();
  } catch (e) {
    say(e.message);
  }
}

async function launch(r) {
  try {
    const access = await api("POST", `/requests/${r.id}/access-string`, {});
    $("launch-command").value = access.command;
    const rdp = $("launch-rdp");
    if (access.rdp_file) {
      rdp.href = URL.createObjectURL(new Blob([access.rdp_file], { type: "application/x-rdp" }));
      rdp.hidden = false;
    } else {
      rdp.hidden = true;
    }
    $("launch").hidden = false;
    $("launch-command").select();
  } catch (e) {
    say(e.message);
  }
}

async function showInbox() {
  const inbox = await api("GET", "/inbox");
  const list = $("inbox-items");
  list.replaceChildren();
  $("inbox-empty").hidden = inbox.items.length > 0;
  for (const item of inbox.items) {
    const r = item.request;
    const li = el("li", undefined, { "data-request": r.id });
    li.append(el("h2", `${r.requester} asks for ${r.access.replace(/_/g, " ")} on ${r.target}`));
    const facts = el("dl");
    const fact = (term, value) => { if (value) { facts.append(el("dt", term), el("dd", value)); } };
    fact("Reason", r.reason);
    fact("Ticket", r.ticket + (r.ticket_verified ? " (verified)" : ""));
    fact("Emergency", r.emergency ? "yes" : "");
    fact("Policy", item.policies.join(", "));
    fact("Approvals", `${item.approvals_given} of ${item.approvals_needed ?? "?"}`);
    fact("Decide by", new Date(r.approval_deadline).toLocaleString());
    li.append(facts);
    const id = `comment-${r.id}`;
    li.append(el("label", "Comment", { for: id }));
    const comment = el("textarea", undefined, { id, rows: "2" });
    li.append(comment);
    const actions = el("div", undefined, { class: "actions" });
    actions.append(
      button("Approve", () => act(`/requests/${r.id}/approve`, { comment: comment.value }, `Approved ${r.id}.`)),
      button("Deny", () => act(`/requests/${r.id}/deny`, { comment: comment.value }, `Denied ${r.id}.`), true),
    );
    li.append(actions);
    list.append(li);
  }
}

// --- sessions -----------------------------------------------------------------------------

const PAGE = 50;
let sessionOffset = 0;

function duration(seconds) {
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s} s` : `${s} s`;
}

function bytes(n) {
  return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
}

async function showSessions() {
  const query = new URLSearchParams();
  const put = (key, id) => { const v = $(id).value.trim(); if (v) query.set(key, v); };
  put("user", "f-user"); put("target", "f-target"); put("protocol", "f-protocol");
  put("state", "f-state"); put("node", "f-node"); put("after", "f-after");
  put("before", "f-before"); put("contains", "f-text"); put("sort", "f-sort"); put("order", "f-order");
  query.set("offset", String(sessionOffset));
  query.set("limit", String(PAGE));
  const list = await api("GET", "/sessions?" + query.toString());
  const rows = $("session-rows");
  rows.replaceChildren();
  for (const s of list.sessions) {
    const tr = el("tr", undefined, { "data-session": s.id });
    cell(tr, "Started", new Date(s.started_at).toLocaleString());
    cell(tr, "User", s.user);
    cell(tr, "Target", s.target);
    cell(tr, "Protocol", s.protocol);
    cell(tr, "Client", s.client);
    cell(tr, "Node", s.node || "this gateway");
    cell(tr, "Duration", s.ended_at ? duration(s.duration_secs) : `running, ${duration(s.duration_secs)}`);
    cell(tr, "Bytes", `${bytes(s.bytes_up)} up, ${bytes(s.bytes_down)} down`);
    cell(tr, "Verdict", s.error ? s.error : s.ended_at ? "ended" : "running");
    const actions = cell(tr, "Actions", "");
    const play = el("a", s.ended_at ? "Play" : "Watch", { href: "/player?session=" + encodeURIComponent(s.id) });
    actions.append(play);
    if (!s.ended_at) {
      actions.append(" ", button("Terminate", async () => {
        const reason = prompt("Why is this session ended? (the user reads it)");
        if (reason === null) return;
        try {
          await api("POST", `/sessions/${encodeURIComponent(s.id)}/terminate`, { reason });
          say(`Session ${s.id} ended.`);
          await showSessions();
        } catch (e) { say(e.message); }
      }, true));
    }
    rows.append(tr);
  }
  const first = list.total === 0 ? 0 : sessionOffset + 1;
  $("page-info").textContent = `${first}–${sessionOffset + list.sessions.length} of ${list.total}`;
  $("page-prev").disabled = sessionOffset === 0;
  $("page-next").disabled = sessionOffset + list.sessions.length >= list.total;
  if (list.total === 0) say("No session matches."); else if ($("status").textContent === "No session matches.") say("");
}

$("sessions-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionOffset = 0;
  showSessions().catch((e) => say(e.message));
});
$("page-prev").addEventListener("click", () => { sessionOffset = Math.max(0, sessionOffset - PAGE); showSessions().catch((e) => say(e.message)); });
$("page-next").addEventListener("click", () => { sessionOffset += PAGE; showSessions().catch((e) => say(e.message)); });

// --- admin ----------------------------------------------------------------------------------

const may = (action) => state.me && state.me.may.includes(action);

async function showAdmin() {
  $("admin-services").hidden = !may("manage_services");
  $("admin-plugins").hidden = !may("view_policies");
  $("admin-policies").hidden = !may("view_policies");
  $("admin-nodes").hidden = !may("view_cluster");
  $("network-form").hidden = !may("manage_cluster");
  if (may("manage_services")) await showServices();
  if (may("view_policies")) await showPlugins();
  if (may("view_policies")) await showPolicies();
  if (may("view_cluster")) await showNodes();
}

async function showPlugins() {
  const plugins = await api("GET", "/plugins");
  const rows = $("plugin-rows");
  rows.replaceChildren();
  for (const p of plugins) {
    const tr = el("tr", undefined, { "data-plugin": p.name });
    const name = cell(tr, "Plugin", "");
    name.append(el("strong", p.name));
    if (p.description) name.append(el("br"), el("span", p.description, { class: "muted" }));
    cell(tr, "Version", `${p.version} (wit ${p.wit})`);
    cell(tr, "Kinds", p.kinds.join(", "));
    const granted = [...p.granted_http.map((h) => "http " + h), ...p.granted_secrets.map((x) => "secret " + x)];
    cell(tr, "Granted", granted.join(", ") || "nothing");
    const stateText = !p.enabled ? "disabled" : p.loaded ? "enabled, running" : `enabled, not loaded: ${p.load_error || "unknown"}`;
    cell(tr, "State", stateText);
    const actions = cell(tr, "Actions", "");
    if (may("manage_plugins")) {
      actions.append(button(p.enabled ? "Disable" : "Enable", async () => {
        try {
          const now = await api("PUT", "/plugins/" + encodeURIComponent(p.name), { enabled: !p.enabled });
          await showPlugins();
          say(`${now.name} is ${now.enabled ? (now.loaded ? "enabled and running" : "enabled but not loaded") : "disabled"}.`);
        } catch (e) {
          say(e.message);
        }
      }, p.enabled));
    }
    rows.append(tr);
  }
  if (plugins.length === 0) {
    const tr = el("tr");
    tr.append(el("td", "No plugin is installed (gatehouse plugin install).", { colspan: "6" }));
    rows.append(tr);
  }
}

async function showServices() {
  const answer = await api("GET", "/services");
  const list = $("service-list");
  list.replaceChildren();
  for (const [name, on] of Object.entries(answer.services)) {
    const li = el("li");
    const label = el("label", undefined, { class: "inline" });
    const box = el("input", undefined, { type: "checkbox", id: "service-" + name });
    box.checked = on;
    box.addEventListener("change", async () => {
      try {
        await api("PUT", "/services/" + encodeURIComponent(name), { enabled: box.checked });
        say(`${name} is ${box.checked ? "on" : "off"}.`);
      } catch (e) {
        box.checked = !box.checked;
        say(e.message);
      }
    });
    label.append(box, " " + name.replace(/_/g, " "));
    li.append(label);
    list.append(li);
  }
}

async function showPolicies() {
  const policies = await api("GET", "/policies");
  const rows = $("policy-rows");
  rows.replaceChildren();
  for (const p of policies) {
    const tr = el("tr");
    cell(tr, "Policy", p.id);
    cell(tr, "Where", p.file ? `${p.file}:${p.line ?? ""}` : "link (a grant or an approved request)");
    rows.append(tr);
  }
}

$("explain-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ user: $("x-user").value.trim(), target: $("x-target").value.trim(), action: $("x-action").value });
  try {
    const x = await api("GET", "/policies/explain?" + query.toString());
    const why = x.policies.map((p) => p.id).join(", ") || "no policy permits it (denied by default)";
    $("explain-result").textContent = `${x.allowed ? "Allowed" : "Denied"}: ${x.user} ${x.action} on ${x.target} (${why})` + (x.errors.length ? `; errors: ${x.errors.join("; ")}` : "");
  } catch (e) {
    $("explain-result").textContent = e.message;
  }
});

$("validate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const list = $("validate-result");
  list.replaceChildren();
  try {
    const checked = await api("POST", "/policies/validate", { name: $("v-name").value.trim(), text: $("v-text").value });
    if (checked.valid) {
      list.append(el("li", `Valid: ${checked.policies} ${checked.policies === 1 ? "policy" : "policies"}.`));
    } else {
      for (const p of checked.problems) {
        list.append(el("li", p.line ? `${p.file}:${p.line}:${p.column}: ${p.message}` : `${p.file}: ${p.message}`, { class: "error" }));
      }
    }
  } catch (e) {
    list.append(el("li", e.message, { class: "error" }));
  }
});

async function showNodes() {
  const nodes = await api("GET", "/nodes");
  const rows = $("node-rows");
  rows.replaceChildren();
  const manage = may("manage_cluster");
  for (const n of nodes) {
    const tr = el("tr", undefined, { "data-node": n.id });
    cell(tr, "Node", n.id);
    cell(tr, "Host", n.hostname);
    cell(tr, "Address", n.address);
    cell(tr, "Status", n.status);
    cell(tr, "Last seen", n.last_seen ? new Date(n.last_seen).toLocaleString() : "never");
    cell(tr, "Networks", (n.networks || []).join(", "));
    const actions = cell(tr, "Actions", "");
    if (manage) {
      actions.append(button("Edit", () => editNode(n), true), " ", button("Remove", async () => {
        if (!confirm(`Remove session node ${n.id}? Its sessions end; it can join again.`)) return;
        try {
          const removed = await api("DELETE", "/nodes/" + encodeURIComponent(n.id));
          await showNodes();
          say(`Node ${removed.id} removed (${removed.deleted}).`);
        } catch (e) { say(e.message); }
      }, true));
    }
    rows.append(tr);
  }
  if (rows.children.length === 0) {
    const tr = el("tr");
    tr.append(el("td", "No session node has joined: this gateway runs every session itself.", { colspan: "7" }));
    rows.append(tr);
  }
  await showNetworks();
}

async function showNetworks() {
  const networks = await api("GET", "/networks");
  const rows = $("network-rows");
  rows.replaceChildren();
  for (const n of networks) {
    const tr = el("tr", undefined, { "data-network": n.network });
    cell(tr, "Network", n.network);
    cell(tr, "Node", n.node);
    cell(tr, "Description", n.description);
    const actions = cell(tr, "Actions", "");
    if (may("manage_cluster")) {
      actions.append(button("Stop managing", async () => {
        try {
          await api("DELETE", "/networks?network=" + encodeURIComponent(n.network));
          await showNodes();
          say(`${n.network} is no longer managed.`);
        } catch (e) { say(e.message); }
      }, true));
    }
    rows.append(tr);
  }
}

function editNode(n) {
  const form = $("node-form");
  form.dataset.node = n.id;
  $("node-form-id").textContent = n.id;
  $("e-address").value = n.address;
  $("e-description").value = n.description || "";
  $("e-hostname").checked = !!n.use_hostname;
  form.hidden = false;
  $("e-address").focus();
}

$("node-form-close").addEventListener("click", () => { $("node-form").hidden = true; });

$("node-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = $("node-form").dataset.node;
  try {
    await api("PATCH", "/nodes/" + encodeURIComponent(id), {
      address: $("e-address").value.trim(), description: $("e-description").value, use_hostname: $("e-hostname").checked,
    });
    $("node-form").hidden = true;
    await showNodes();
    say(`Node ${id} saved.`);
  } catch (e) {
    say(e.message);
  }
});

$("network-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("POST", "/networks", { network: $("n-network").value.trim(), node: $("n-node").value.trim(), description: "" });
    await showNodes();
    say("Network added.");
  } catch (e) {
    say(e.message);
  }
});

// --- start ----------------------------------------------------------------------------------

setInterval(() => { if (state.me) badge().catch(() => {}); }, 30000);
signedIn().catch(() => signedOut());
