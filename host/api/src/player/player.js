// The Gatehouse recordings player. Served by the gateway (its only third-party script is the
// vendored asciinema-player, served by the gateway too); it talks only to the gateway's API with
// a bearer token kept in this tab's sessionStorage. Videos and terminal recordings are fetched
// with the token (videos played from a blob), so no token ever appears in a URL.
//
// Every event carries `playback_time`, computed by the gateway from the same cuts the playback
// has (an RDP or VNC video's idle cuts, a terminal recording's shortened pauses): clicking an
// event seeks there, so the player shows the event even after a long idle stretch.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("gatehouse-token");
let videoUrl = null;
let terminal = null;      // the asciinema player of the open SSH session
let castText = null;      // its recording, to re-create the player at another speed
let opened = 0;           // bumped per opened session: late answers for an older one are dropped
let live = null;          // the AbortController of the running session being watched
let frameUrl = null;      // the live screen's current frame (an object URL)
let castUrl = null;       // the terminal recording as a file to download (an object URL)

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
      delete rest.wall_time; delete rest.playback_time;
      return kind + (Object.keys(rest).length ? " " + JSON.stringify(rest) : "");
    }
  }
}

function speed() { return Number($("speed").value) || 1; }

function clock(wallTime) {
  // "2025-01-02T03:04:05.678Z": the local time of day, to the second.
  const at = new Date(wallTime);
  return isNaN(at) ? "" : at.toLocaleTimeString();
}

function seek(seconds) {
  if (!$("video").hidden) {
    $("video").currentTime = seconds;
    $("video").play().catch(() => { /* paused by the user meanwhile */ });
  } else if (terminal) {
    terminal.seek(seconds).then(() => terminal.play()).catch(() => { /* disposed meanwhile */ });
  }
}

function showEvents(events) {
  const list = $("events");
  list.replaceChildren();
  for (const e of events) {
    const item = document.createElement("li");
    const when = document.createElement("span");
    when.className = "when";
    text(when, clock(e.wall_time) + "  +" + e.time.toFixed(1) + "s  ");
    const what = document.createElement("span");
    text(what, eventText(e));
    item.append(when, what);
    if (e.playback_time != null) {
      item.classList.add("seekable");
      item.dataset.playbackTime = String(e.playback_time);
      item.title = "play from " + e.playback_time.toFixed(1) + " s";
      item.addEventListener("click", () => seek(e.playback_time));
    }
    list.appendChild(item);
  }
}

function closePlayers() {
  if (live) { live.abort(); live = null; }
  if (frameUrl) { URL.revokeObjectURL(frameUrl); frameUrl = null; }
  $("screen").removeAttribute("src");
  $("screen").hidden = true;
  $("live-note").hidden = true;
  if (terminal) { terminal.dispose(); terminal = null; }
  castText = null;
  $("terminal").replaceChildren();
  $("terminal").hidden = true;
  const video = $("video");
  video.pause();
  video.removeAttribute("src");
  video.hidden = true;
  if (videoUrl) { URL.revokeObjectURL(videoUrl); videoUrl = null; }
  if (castUrl) { URL.revokeObjectURL(castUrl); castUrl = null; }
  $("download").hidden = true;
  $("download").removeAttribute("href");
  $("controls").hidden = true;
}

function startTerminal(at, play) {
  if (terminal) { terminal.dispose(); terminal = null; }
  $("terminal").replaceChildren();
  terminal = AsciinemaPlayer.create({ data: castText }, $("terminal"), {
    speed: speed(),
    startAt: at || 0,
    autoPlay: !!play,
    preload: true,
    fit: "width",
    terminalFontSize: "small",
    controls: true,
  });
}

// Opens `session` (its row selected when listed); `moment`, from a search hit, says where to
// start: the terminal channel and the playback time.
async function openSession(row, session, moment) {
  const mine = ++opened;
  document.querySelectorAll("tr.session").forEach((r) => r.classList.remove("selected"));
  if (row) row.classList.add("selected");
  text($("title"), session.user + " \u2192 " + session.target + " (" + session.protocol + ")");
  text($("status"), "loading\u2026");
  closePlayers();
  $("events").replaceChildren();
  const path = "/sessions/" + encodeURIComponent(session.id);
  try {
    const detail = await (await api(path)).json();
    if (mine !== opened) return;
    showEvents(detail.events);
    if (session.ended_at === null) {
      await watchLive(session, path);
      return;
    }
    if (session.playback === "video") {
      text($("status"), "rendering the video (the first time can take a while)\u2026");
      const blob = await (await api(path + "/video")).blob();
      if (mine !== opened) return;
      videoUrl = URL.createObjectURL(blob);
      $("video").src = videoUrl;
      offerDownload(videoUrl, session.id + ".webm");
      $("video").playbackRate = speed();
      $("video").hidden = false;
      text($("idle-note"), "long idle stretches are cut");
      // Now rendered: the events' times in this video (its idle cuts subtracted).
      const rendered = await (await api(path)).json();
      if (mine !== opened) return;
      showEvents(rendered.events);
      if (moment && moment.playback_time != null) seek(moment.playback_time);
    } else {
      const channel = moment && moment.channel != null ? "?channel=" + moment.channel : "";
      const cast = await (await api(path + "/cast" + channel)).text();
      if (mine !== opened) return;
      castText = cast;
      castUrl = URL.createObjectURL(new Blob([cast], { type: "application/x-asciicast" }));
      offerDownload(castUrl, session.id + (moment && moment.channel != null ? "-" + moment.channel : "") + ".cast");
      $("terminal").hidden = false;
      text($("idle-note"), "pauses over 2 s are shortened to 2 s");
      const at = moment && moment.playback_time != null ? moment.playback_time : 0;
      startTerminal(at, !!moment);
      $("terminal").dataset.startAt = String(at);
    }
    $("controls").hidden = false;
    text($("status"), "");
  } catch (e) {
    if (e.message !== "unauthorized" && mine === opened) text($("status"), e.message);
  }
}

// A running session, as it happens (GET /api/v1/sessions/{id}/live): an SSH terminal is an
// asciicast stream fed line by line to the terminal player, an RDP or VNC screen a stream of PNG
// frames (multipart, each with its Content-Length) shown one after another. Both end with the
// session.
async function watchLive(session, path) {
  live = new AbortController();
  const watching = live;
  const response = await api(path + "/live", { signal: watching.signal });
  const reader = response.body.getReader();
  $("live-note").hidden = false;
  text($("status"), "");
  const ended = () => {
    if (live !== watching) return;
    text($("status"), "the session ended; its recording plays from the list");
    $("live-note").hidden = true;
  };
  if (session.playback === "video") {
    $("screen").hidden = false;
    readFrames(reader, watching).then(ended, () => {});
    return;
  }
  $("terminal").hidden = false;
  terminal = AsciinemaPlayer.create(liveDriver(reader, ended), $("terminal"), {
    autoPlay: true, fit: "width", terminalFontSize: "small", controls: false,
  });
}

// A driver for the terminal player that reads the live asciicast stream: `init` waits for the
// header (the terminal's size), `play` feeds the output as it comes.
function liveDriver(reader, ended) {
  return ({ dispatch }) => {
    let stopped = false;
    const decoder = new TextDecoder();
    let buffer = "";
    // The next complete line of the stream (keep-alives skipped); null at its end.
    const nextLine = async () => {
      for (;;) {
        const newline = buffer.indexOf("\n");
        if (newline >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (line) return line;
          continue;
        }
        const { value, done } = await reader.read();
        if (done || stopped) return null;
        buffer += decoder.decode(value, { stream: true });
      }
    };
    const run = async () => {
      for (;;) {
        const line = await nextLine();
        if (line === null) break;
        const item = JSON.parse(line);
        if (Array.isArray(item) && item[1] === "o") dispatch("output", item[2]);
      }
      if (!stopped) { dispatch("ended", { message: "The session ended" }); ended(); }
    };
    return {
      async init() {
        const line = await nextLine();
        const header = line ? JSON.parse(line) : { width: 80, height: 24 };
        // A client that sent no window size (0 x 0) gets the usual 80 x 24.
        dispatch("reset", { size: { cols: header.width || 80, rows: header.height || 24 } });
      },
      play() {
        dispatch("play");
        dispatch("playing");
        run().catch(() => {});
        return true;
      },
      stop() { stopped = true; reader.cancel().catch(() => {}); },
    };
  };
}

// Reads multipart PNG frames and shows each as it arrives.
async function readFrames(reader, watching) {
  let buffer = new Uint8Array(0);
  const headEnd = (bytes) => {
    for (let i = 0; i + 3 < bytes.length; i++) {
      if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
    }
    return -1;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done || live !== watching) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    for (;;) {
      const end = headEnd(buffer);
      if (end < 0) break;
      const head = new TextDecoder().decode(buffer.slice(0, end));
      const length = Number((/content-length:\s*(\d+)/i.exec(head) || [])[1]);
      if (!Number.isFinite(length)) return;
      if (buffer.length < end + 4 + length) break;
      const png = buffer.slice(end + 4, end + 4 + length);
      buffer = buffer.slice(end + 4 + length);
      if (frameUrl) URL.revokeObjectURL(frameUrl);
      frameUrl = URL.createObjectURL(new Blob([png], { type: "image/png" }));
      $("screen").src = frameUrl;
    }
  }
}

// The recording as a file: asciicast for a terminal (plays in `asciinema play`), WebM for RDP and VNC.
function offerDownload(url, name) {
  const link = $("download");
  link.href = url;
  link.download = name;
  link.hidden = false;
}

function changeSpeed() {
  if (!$("video").hidden) {
    $("video").playbackRate = speed();
  } else if (terminal && castText) {
    // The player takes its speed when created: go on from the same moment.
    const at = terminal.getCurrentTime() || 0;
    startTerminal(at, true);
  }
}

// The snippet of a hit, its matched ranges (byte offsets of UTF-8) marked.
function snippetNode(hit) {
  const node = document.createElement("span");
  node.className = "snippet";
  const bytes = new TextEncoder().encode(hit.snippet);
  const decode = (from, to) => new TextDecoder().decode(bytes.slice(from, to));
  let at = 0;
  for (const [start, end] of hit.highlights) {
    if (start < at || end > bytes.length) continue;
    node.append(decode(at, start));
    const mark = document.createElement("mark");
    text(mark, decode(start, end));
    node.append(mark);
    at = end;
  }
  node.append(decode(at, bytes.length));
  return node;
}

// Shows the moments matching `q`; returns the ids of their sessions.
async function loadMoments(q) {
  const list = $("moments");
  const sessions = new Set();
  list.replaceChildren();
  text($("moments-status"), "");
  $("moments-box").hidden = !q;
  if (!q) return sessions;
  try {
    const found = await (await api("/search?limit=50&q=" + encodeURIComponent(q))).json();
    for (const hit of found.hits) {
      sessions.add(hit.session);
      const item = document.createElement("li");
      item.dataset.session = hit.session;
      item.dataset.kind = hit.kind;
      if (hit.playback_time != null) item.dataset.playbackTime = String(hit.playback_time);
      const when = document.createElement("span");
      when.className = "muted";
      text(when, clock(hit.at) + "  " + hit.user + " \u2192 " + hit.target + "  " + hit.kind + "  +" + hit.time.toFixed(1) + "s");
      item.append(when, snippetNode(hit));
      item.addEventListener("click", () => {
        document.querySelectorAll("ol#moments li").forEach((i) => i.classList.remove("selected"));
        item.classList.add("selected");
        const row = document.querySelector('tr.session[data-id="' + CSS.escape(hit.session) + '"]');
        const session = { id: hit.session, user: hit.user, target: hit.target, protocol: hit.protocol,
          playback: hit.protocol === "rdp" || hit.protocol === "vnc" ? "video" : "transcript" };
        openSession(row, session, hit);
      });
      list.appendChild(item);
    }
    text($("moments-status"), found.hits.length ? "" : "No moment matches (a session is searchable a few seconds after it ends).");
  } catch (e) {
    if (e.message !== "unauthorized") text($("moments-status"), e.message);
  }
  return sessions;
}

// Without a query: every session you may watch. With one: the sessions with moments that
// match (the search index), or, while none match, those whose text contains the query as typed
// (a session is indexed a few seconds after it ends).
async function loadSessions(event) {
  if (event) event.preventDefault();
  const contains = $("contains").value.trim();
  const matched = await loadMoments(contains);
  const query = contains && matched.size === 0 ? "?contains=" + encodeURIComponent(contains) : "";
  const body = $("sessions");
  body.replaceChildren();
  try {
    const list = await (await api("/sessions" + query)).json();
    const shown = matched.size ? list.sessions.filter((s) => matched.has(s.id)) : list.sessions;
    for (const s of shown) {
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
    text($("list-status"), shown.length ? "" : "No recording you may watch" + (contains ? " matches." : "."));
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
  $("logout").addEventListener("click", () => { closePlayers(); logout(""); });
  $("speed").addEventListener("change", changeSpeed);
  boot();
});

// A bearer token from this tab's own login, else the portal's session cookie (the portal's
// Sessions page links here), else the login form.
async function boot() {
  if (token) return start();
  try {
    const session = await (await fetch("/api/v1/portal/session")).json();
    if (session.signed_in) return start();
  } catch (_) { /* not signed in */ }
  logout("");
}
