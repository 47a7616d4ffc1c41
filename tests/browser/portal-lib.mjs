// What the portal's browser scripts share: settings from the environment, checks, waits, the
// watch for console errors and failed requests, screenshots, signing in, the browser itself.
import { chromium } from "playwright-core";

export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
export const base = env("GH_URL");
export const password = env("PASSWORD");
export const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshots = process.env.SCREENSHOTS;

export const problems = [];
export const log = (line) => console.log(line);
export function check(ok, what) {
  if (!ok) throw new Error("FAILED: " + what);
  log("ok: " + what);
}

export async function until(what, probe, timeout = 20000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function watch(page, who) {
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`${who} console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${who} page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`${who} request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`${who} HTTP ${r.status()}: ${r.url()}`);
  });
}

// Drops the one HTTP error a step provoked on purpose, and the console line the browser writes
// for it (and only those).
export function forgive(status, path) {
  const i = problems.findIndex((p) => p.includes(`HTTP ${status}: `) && p.endsWith(path));
  if (i >= 0) problems.splice(i, 1);
  const j = problems.findIndex((p) => p.includes(`status of ${status}`));
  if (j >= 0) problems.splice(j, 1);
}

// Drops the failures of requests to URLs ending in `suffix` that were cancelled on purpose
// (a stream the page stops reading when the user leaves it): `net::ERR_ABORTED` only.
export function forgiveAborted(suffix) {
  for (let i = problems.length - 1; i >= 0; i--) {
    const p = problems[i];
    if (p.includes(" request failed: ") && p.endsWith(`${suffix} net::ERR_ABORTED`)) problems.splice(i, 1);
  }
}

export async function shot(page, name) {
  if (screenshots) await page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
}

export async function signIn(page, user) {
  await page.goto(base + "/portal");
  await page.waitForSelector("#signin:not([hidden])");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#nav:not([hidden])");
}

// Runs `steps(newPage)` in headless chromium, where `newPage(who, options)` opens a page in a
// browser context of its own (the gateway's own CA accepted), watched for problems. Exits 1 on
// the first failed check, or when any console error, failed request or HTTP error is left.
export async function inBrowser(steps) {
  const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
  const newPage = async (who, options = {}) => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, ...options });
    const page = await context.newPage();
    watch(page, who);
    return page;
  };
  let failed = false;
  try {
    await steps(newPage);
    check(problems.length === 0, "no console error, failed request or HTTP error:\n" + problems.join("\n"));
  } catch (e) {
    failed = true;
    console.error(e.message);
    if (problems.length) console.error(problems.join("\n"));
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
}
