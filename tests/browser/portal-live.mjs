// A running session in the portal, in a real browser: run by tests/portal.rs while USER_NAME's
// ssh session runs. SUPERVISOR (who may watch and end sessions) finds it under Sessions as
// running, watches it live in the player (what the terminal showed so far, then what it shows
// next: LATER, which the test types once the user is told someone watches), then ends it with
// the Terminate button and a reason. Same settings as portal.mjs (GH_URL, PASSWORD, CHROMIUM,
// SCREENSHOTS); EARLIER and LATER are texts the session prints.
import { check, env, forgiveAborted, shot, signIn, until, inBrowser } from "./portal-lib.mjs";

const supervisor = env("SUPERVISOR");
const user = env("USER_NAME");
const earlier = env("EARLIER");
const later = env("LATER");
const reason = env("REASON");

await inBrowser(async (newPage) => {
  const page = await newPage(supervisor);
  await signIn(page, supervisor);
  await page.click("a[data-page=sessions]");
  await page.selectOption("#f-state", "running");
  await page.locator("#f-user").fill(user);
  const answered = page.waitForResponse((r) => r.url().includes("/api/v1/sessions?"));
  await page.getByRole("button", { name: "Show" }).click();
  await answered;
  const row = page.locator("#session-rows tr").first();
  await until("the running session", async () => (await row.textContent() || "").includes("running"));
  check((await page.$$("#session-rows tr")).length === 1, "one running session of " + user);
  check((await row.locator("a").textContent()) === "Watch", "a running session is watched, not played");

  // Live in the player, on the portal's session.
  await row.locator("a").click();
  await page.waitForURL(/\/player\?session=/);
  await page.waitForSelector("#live-note:not([hidden])");
  const terminal = () => page.evaluate(() => document.querySelector("#terminal").innerText);
  await until("what the terminal showed before", async () => (await terminal()).includes(earlier), 30000);
  check(true, "the live view starts with the screen so far");
  await until("what the terminal shows next", async () => (await terminal()).includes(later), 60000);
  check(true, "and goes on as the session goes on");
  await shot(page, "portal-live");

  // Ended from the Sessions page, with a reason the user reads. Leaving the player cancels
  // the live stream (the only request allowed to fail).
  await page.goBack();
  await page.waitForSelector("#nav:not([hidden])");
  forgiveAborted("/live");
  await page.click("a[data-page=sessions]");
  await page.selectOption("#f-state", "running");
  await page.locator("#f-user").fill(user);
  await page.getByRole("button", { name: "Show" }).click();
  await until("the row again", async () => (await page.$$("#session-rows button")).length === 1);
  page.once("dialog", (dialog) => dialog.accept(reason));
  await page.locator("#session-rows").getByRole("button", { name: "Terminate" }).click();
  await until("ended", async () => /^(Session .* ended|No session matches)\.$/.test(await page.textContent("#status")), 30000);
  await until("no longer running", async () => {
    const shown = page.waitForResponse((r) => r.url().includes("/api/v1/sessions?"));
    await page.getByRole("button", { name: "Show" }).click();
    await shown;
    await page.waitForTimeout(300);
    return (await page.$$("#session-rows tr")).length === 0;
  }, 30000);
  check(true, "terminated from the portal; no running session is left");
});
