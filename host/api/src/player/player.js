// The Gatehouse recordings player. Served by the gateway (no third-party script); it talks only
// to the gateway's API with a bearer token kept in this tab's sessionStorage. Videos are fetched
// with the token and played from a blob, so no token ever appears in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("gatehouse-token");
let videoUrl = null;

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch("/api/v1" + path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    logout("Your session with the gateway ended; log in again.");
    throw new Error("unauthorized");
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function text(node, value) { node.textContent = value == null ? "" : String(value); }

function logout(message) {
  token = null;
  sessionStorage.removeItem("gatehouse-token");
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  text($("who"), "");
  text($("login-error"), message || "");
}

async function login(event) {
  event.preventDefault();
  text($("login-error"), "");
  try {
    const response = await fetch("/api/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    token = body.token;
    sessionStorage.setItem("gatehouse-token", token);
    $("password").value = "";
    start();
  } catch (e) {
    text($("login-error"), e.message);
  }
}

function eventText(e) {
  const kind = e.type;
  switch (kind) {
    case "keys": return "keys " + JSON.stringify(e.text);
    case "clipboard": return "clipboard " + (e.direction || "") + " " + (e.text != null ? JSON.stringify(e.text) : (e.bytes + " bytes " + (e.format || "")));
    case "exec": return "exec " + e.command;
    case "file": return (e.op || "file") + " " + (e.path || "");
    default: {
      const rest = Object.assign({}, e);
      delete rest.time; delete rest.type; delete rest.channel;
      return kind + (Object.keys(rest).length ? " " + JSON.stringify(rest) : "");
    }
  }
}

async function openSession(row, session) {
  document.querySelectorAll("tr.session").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  text($("title"), session.user + " \u2192 " + session.target + " (" + session.protocol + ")");
  text($("status"), "loading\u2026");
  $("video").hidden = true;
  $("transcript").hidden = true;
  if (videoUrl) { URL.revokeObjectURL(videoUrl); videoUrl = null; }
  const list = $("events");
  list.replaceChildren();
  try {
    const detail = await (await api("/sessions/" + encodeURIComponent(session.id))).json();
    for (const e of detail.events) {
      const item = document.createElement("li");
      text(item, e.time.toFixed(1) + "s  " + eventText(e));
      item.addEventListener("click", () => {
        if (!$("video").hidden) { $("video").currentTime = e.time; $("video").play(); }
      });
      list.appendChild(item);
    }
    if (session.playback === "video") {
      text($("status"), "rendering the video (the first time can take a while)\u2026");
      const blob = await (await api("/sessions/" + encodeURIComponent(session.id) + "/video")).blob();
      videoUrl = URL.createObjectURL(blob);
      $("video").src = videoUrl;
      $("video").hidden = false;
    } else {
      const transcript = await (await api("/sessions/" + encodeURIComponent(session.id) + "/transcript")).text();
      text($("transcript"), transcript);
      $("transcript").hidden = false;
    }
    text($("status"), "");
  } catch (e) {
    if (e.message !== "unauthorized") text($("status"), e.message);
  }
}

async function loadSessions(event) {
  if (event) event.preventDefault();
  const contains = $("contains").value.trim();
  const query = contains ? "?contains=" + encodeURIComponent(contains) : "";
  const body = $("sessions");
  body.replaceChildren();
  try {
    const list = await (await api("/sessions" + query)).json();
    for (const s of list.sessions) {
      const row = document.createElement("tr");
      row.className = "session";
      row.dataset.id = s.id;
      for (const value of [s.started_at.replace("T", " ").replace("Z", ""), s.user, s.target, s.protocol]) {
        const cell = document.createElement("td");
        text(cell, value);
        row.appendChild(cell);
      }
      row.addEventListener("click", () => openSession(row, s));
      body.appendChild(row);
    }
    text($("list-status"), list.sessions.length ? "" : "No recording you may watch" + (contains ? " matches." : "."));
  } catch (e) {
    if (e.message !== "unauthorized") text($("list-status"), e.message);
  }
}

async function start() {
  try {
    const me = await (await api("/me")).json();
    text($("who"), me.name);
  } catch (_) {
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await loadSessions();
  const wanted = new URLSearchParams(location.search).get("session");
  if (wanted) {
    const row = document.querySelector('tr.session[data-id="' + CSS.escape(wanted) + '"]');
    if (row) row.click();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", login);
  $("search").addEventListener("submit", loadSessions);
  $("logout").addEventListener("click", () => logout(""));
  if (token) start(); else logout("");
});
