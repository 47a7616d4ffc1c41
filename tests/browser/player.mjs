// The recordings player in a real browser: Debian's chromium driven by playwright-core.
// Run by tests/player.rs, which starts the gateway, records the sessions and passes them here:
//
//   GH_URL        the gateway's API origin (https://127.0.0.1:PORT; its own CA, so TLS errors
//                 are ignored for this origin only: the browser has no way to know that CA)
//   GH_USER, GH_PASSWORD   an auditor who may watch every recording
//   SSH_ID        a recorded pty shell session that printed MARKER, then after an idle stretch
//                 AFTER_IDLE; SECRET was typed at a prompt that did not echo it
//   RDP_ID        an RDP session with an idle stretch longer than the video's cap, then typing
//   RDP_EXPECTED  seconds of the rendered video that show that typing (computed by the test
//                 from the recording with the export's own clock)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   SCREENSHOTS   optional: a directory to save what the page looked like (terminal, video)
//
// Prints one line per check; exits 1 on the first failure, with what the page logged.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("GH_URL");
const marker = env("MARKER");
const afterIdle = env("AFTER_IDLE");
const secret = env("SECRET");
const sshId = env("SSH_ID");
const rdpId = env("RDP_ID");
const rdpExpected = Number(env("RDP_EXPECTED"));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshots = process.env.SCREENSHOTS;

const problems = [];   // console errors, page errors, failed requests, HTTP errors
const log = (line) => console.log(line);

function check(ok, what) {
  if (!ok) throw new Error("FAILED: " + what);
  log("ok: " + what);
}

async function until(what, probe, timeout = 30000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Root in CI: chromium's sandbox needs an unprivileged user.
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
});
let failed = false;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("requestfailed", (r) => {
    // The video element reads its blob in ranges and cancels a read it no longer needs when it
    // seeks or its page goes away: that abort is the media stack's own, not a failure.
    if (r.url().startsWith("blob:") && r.failure()?.errorText === "net::ERR_ABORTED") return;
    problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });

  // The page, its icon and its CSP.
  const response = await page.goto(base + "/player");
  check(response.status() === 200, "GET /player is 200");
  const csp = response.headers()["content-security-policy"] || "";
  check(!csp.includes("unsafe-inline") && !csp.includes("'unsafe-eval'") && csp.includes("script-src 'self'"),
    "the player's CSP forbids inline and eval'd script: " + csp);
  await page.waitForSelector("#login:not([hidden])");

  await page.fill("#user", env("GH_USER"));
  await page.fill("#password", env("GH_PASSWORD"));
  await page.click("#login button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector("tr.session");
  const icon = await page.evaluate(async () => {
    const r = await fetch("/favicon.ico");
    return { status: r.status, type: r.headers.get("content-type"), size: (await r.arrayBuffer()).byteLength };
  });
  check(icon.status === 200 && icon.type === "image/x-icon" && icon.size > 100, "/favicon.ico is an icon: " + JSON.stringify(icon));

  const rows = () => page.$$eval("tr.session", (r) => r.map((row) => row.dataset.id));
  const search = async (text) => {
    await page.fill("#contains", text);
    // The list comes after the moments: every session, narrowed to those with moments, or by
    // the text as typed when no moment matched.
    const answered = page.waitForResponse((r) => /\/api\/v1\/sessions(\?|$)/.test(r.url()));
    await page.click("#search button");
    await answered;
    await page.waitForTimeout(100);
    return rows();
  };

  // Search: the marker typed and printed in the shell finds the shell session; the secret
  // typed at a prompt that did not echo it finds nothing.
  check(JSON.stringify(await search(marker)) === JSON.stringify([sshId]), `searching ${marker} finds the shell session only`);
  check(JSON.stringify(await search(afterIdle)) === JSON.stringify([sshId]), `searching ${afterIdle} (printed, not typed) finds it`);
  check((await search(secret)).length === 0, "searching the unechoed secret finds nothing");
  check((await page.textContent("#list-status")).includes("No recording"), "the page says nothing matched");
  check((await page.textContent("#moments-status")).includes("No moment matches"), "nor any moment");
  const bad = async (q) => { await search(q); return page.textContent("#moments-status"); };
  check((await bad("colour:blue")).includes("the query cannot be read"), "a query that cannot be read says so");
  // That 400 was asked for: the browser logs it, and nothing else may.
  const asked = (p) => p.includes("/api/v1/search?limit=50&q=colour%3Ablue") ||
    p.includes("the server responded with a status of 400");
  const unasked = problems.filter((p) => !asked(p));
  check(problems.length - unasked.length === 2, "the asked-for 400 is all the browser logged of it: " + problems.join("; "));
  problems.splice(0, problems.length, ...unasked);

  // The shell session in the terminal player: nothing shown before playing.
  await search(marker);
  await page.click(`tr.session[data-id="${sshId}"]`);
  await page.waitForSelector("#terminal:not([hidden]) .ap-player");
  const shown = () => page.evaluate(() => document.querySelector("#terminal").innerText);
  check(!(await shown()).includes(marker), "before playing, the terminal does not show the marker");
  const duration = await until("the player's duration", () => page.evaluate(() => terminal && terminal.getDuration()));
  log("terminal recording duration: " + duration.toFixed(2) + " s");

  // The recording as a file: the asciicast itself, which `asciinema play` takes.
  const [castFile] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  check(castFile.suggestedFilename() === sshId + ".cast", "the download is named " + castFile.suggestedFilename());
  const castText = readFileSync(await castFile.path(), "utf8");
  check(JSON.parse(castText.split("\n")[0]).version === 2 && castText.includes(marker), "the download is the session's asciicast");

  // Play at 4×: the marker appears, then the text printed after the idle stretch, the
  // stretch shortened to 2 s (0.5 s at 4×), not the 12 s it lasted.
  await page.selectOption("#speed", "4");
  const started = Date.now();
  await until("the marker on the terminal", async () => (await shown()).includes(marker), 60000);
  const markerAt = Date.now();
  await until("the output after the idle stretch", async () => (await shown()).includes(afterIdle), 60000);
  const afterAt = Date.now();
  const gap = (afterAt - markerAt) / 1000;
  log(`marker after ${((markerAt - started) / 1000).toFixed(2)} s, the later output ${gap.toFixed(2)} s later`);
  check(gap >= 0.3, "the later output is played later, with the recording's timing (gap " + gap + " s)");
  check(gap < 2.5, "the idle stretch is shortened (12 s at 4× would be 3 s; gap " + gap + " s)");
  check(!(await shown()).includes(secret), "the terminal never shows the secret");
  if (screenshots) await page.screenshot({ path: screenshots + "/terminal.png", fullPage: true });

  // An event of the shell session seeks the terminal player there: the shell's start takes
  // the finished playback back to the beginning, before the later output.
  const starts = await page.$$eval("ol#events li.seekable", (items) =>
    items.filter((i) => / shell$/.test(i.textContent)).map((i) => Number(i.dataset.playbackTime)));
  check(starts.length === 1 && starts[0] < 1, "the shell's start has a playback time at the cast's start: " + starts);
  await until("the end of the playback", () => page.evaluate(() => terminal.getCurrentTime() >= terminal.getDuration() - 0.1), 30000);
  await page.click("ol#events li.seekable >> text=/ shell$/");
  await until("the terminal back before the idle stretch", async () => !(await shown()).includes(afterIdle), 10000);
  const back = await page.evaluate(() => terminal.getCurrentTime());
  check(back < duration / 2, `clicking the shell's start seeks the terminal back (at ${back} of ${duration} s)`);

  // A moment found by the search opens its session there: the output after the idle stretch,
  // highlighted in its snippet, played from its moment.
  await search(afterIdle);
  const momentItem = `ol#moments li[data-session="${sshId}"][data-kind="output"]`;
  const moment = await page.$eval(momentItem, (i) => ({
    at: Number(i.dataset.playbackTime), mark: (i.querySelector("mark") || {}).textContent }));
  check(moment.mark === afterIdle, `the moment's snippet marks ${afterIdle} (${moment.mark})`);
  check(moment.at > 1 && moment.at < duration, `the moment is past the marker, in the played cast (${moment.at} of ${duration} s)`);
  await page.click(momentItem);
  await until("the terminal at the moment", async () => (await shown()).includes(afterIdle), 20000);
  const playedFrom = await page.evaluate(() => Number(document.querySelector("#terminal").dataset.startAt));
  check(Math.abs(playedFrom - moment.at) < 0.001, `clicking the moment plays from it (from ${playedFrom})`);
  if (screenshots) await page.screenshot({ path: screenshots + "/moment.png", fullPage: true });

  // The RDP session: its video, and the typing after the idle stretch seeks to the frame of
  // the typing in the video (idle cuts subtracted), not to its time in the recording.
  await page.fill("#contains", "");
  await page.click("#search button");
  await page.waitForSelector(`tr.session[data-id="${rdpId}"]`);
  await page.click(`tr.session[data-id="${rdpId}"]`);
  await page.waitForSelector("#video:not([hidden])", { timeout: 180000 });
  await page.waitForFunction(() => document.querySelector("#video").readyState >= 1, null, { timeout: 60000 });
  const [videoFile] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  const webm = readFileSync(await videoFile.path());
  check(videoFile.suggestedFilename().endsWith(".webm") && webm.length > 1000 && webm.readUInt32BE(0) === 0x1a45dfa3, "the RDP download is the WebM video (" + webm.length + " bytes)");
  const keys = await until("the typing event with its video time", () => page.$$eval("ol#events li", (items) =>
    items.filter((i) => i.textContent.includes("keys")).map((i) => ({
      text: i.textContent,
      playback: i.dataset.playbackTime == null ? null : Number(i.dataset.playbackTime),
    })).find((k) => k.playback != null)), 60000);
  const recordingTime = Number(keys.text.match(/\+([0-9.]+)s/)[1]);
  const videoLength = await page.evaluate(() => document.querySelector("#video").duration);
  log(`typing at ${recordingTime} s of the recording, ${keys.playback} s of the ${videoLength} s video`);
  check(Math.abs(keys.playback - rdpExpected) < 0.001, `the event's video time is the export's (${rdpExpected})`);
  check(recordingTime > videoLength, "the typing's recording time is past the end of the cut video");
  await page.evaluate(() => {
    const video = document.querySelector("#video");
    window.seekedTo = null;
    // Read when the seek starts: once it is done the video plays on from there.
    video.addEventListener("seeking", () => { if (window.seekedTo == null) window.seekedTo = video.currentTime; });
  });
  await page.click("ol#events li.seekable >> text=keys");
  const seekedTo = await until("the video's seek", () => page.evaluate(() => window.seekedTo), 30000);
  if (screenshots) {
    await page.waitForTimeout(500);
    await page.screenshot({ path: screenshots + "/video.png", fullPage: true });
  }
  check(Math.abs(seekedTo - rdpExpected) < 0.2, `clicking the typing seeks the video to ${rdpExpected} s, within a frame (at ${seekedTo})`);

  // The API's docs page, from the same origin: no missing icon either.
  const docs = await page.goto(base + "/api/docs");
  check(docs.status() === 200, "GET /api/docs is 200");
  await page.waitForTimeout(500);

  check(problems.length === 0, "no console error, failed request or HTTP error on the pages:\n  " + problems.join("\n  "));
} catch (e) {
  failed = true;
  console.error(e.message);
  if (problems.length) console.error("what the page logged:\n  " + problems.join("\n  "));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
