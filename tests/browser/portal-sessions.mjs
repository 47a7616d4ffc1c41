// The portal's Sessions page in a real browser: run by tests/portal.rs after two ssh sessions
// (REQUESTER's and HELD_USER's) went through the gateway. AUDITOR (who may watch recordings)
// signs in, sees both, narrows by user, protocol and text, sorts, and finds the player's link.
// Same settings as portal.mjs (GH_URL, PASSWORD, CHROMIUM, SCREENSHOTS).
import { check, env, shot, signIn, until, inBrowser } from "./portal-lib.mjs";

const auditor = env("AUDITOR");
const requester = env("REQUESTER");
const heldUser = env("HELD_USER");

await inBrowser(async (newPage) => {
  const page = await newPage(auditor);
  await signIn(page, auditor);
  await page.click("a[data-page=sessions]");
  const rows = async () => page.$$eval("#session-rows tr", (r) => r.map((row) => row.textContent));
  await until("two sessions", async () => (await rows()).length >= 2);
  const all = await rows();
  check(all.some((r) => r.includes(requester)) && all.some((r) => r.includes(heldUser)), "both users' sessions are listed");
  check(all.every((r) => r.includes("ssh") && r.includes("127.0.0.1")), "protocol and client address shown");
  await shot(page, "portal-sessions");

  const show = async () => {
    const answered = page.waitForResponse((r) => r.url().includes("/api/v1/sessions?"));
    await page.getByRole("button", { name: "Show" }).click();
    await answered;
    await page.waitForTimeout(100);
  };
  await page.locator("#f-user").fill(heldUser);
  await show();
  const mine = await rows();
  check(mine.length === 1 && mine[0].includes(heldUser), "narrowed to one user");
  check((await page.textContent("#page-info")) === "1–1 of 1", "the pager says 1–1 of 1");
  const href = await page.getAttribute("#session-rows a", "href");
  check(href.startsWith("/player?session="), "a link to the player: " + href);
  // The player opens on the portal's session: no second sign-in.
  await page.click("#session-rows a");
  await page.waitForURL(/\/player\?session=/);
  await page.waitForSelector("#app:not([hidden])");
  check(await page.isHidden("#login"), "the player needs no second sign-in");
  await until("the player's list", async () => (await page.$$("tr.session")).length >= 1);
  await page.goBack();
  await page.waitForSelector("#nav:not([hidden])");
  await page.click("a[data-page=sessions]");
  await page.locator("#f-user").fill(heldUser);

  await page.locator("#f-text").fill("released-in-the-browser");
  await show();
  check((await rows()).length === 1, "found by what the session showed");

  await page.locator("#f-user").fill("");
  await page.locator("#f-text").fill("");
  await page.selectOption("#f-protocol", "rdp");
  await show();
  check((await rows()).length === 0 && (await page.textContent("#status")) === "No session matches.", "no rdp session: says so");

  await page.selectOption("#f-protocol", "");
  await page.selectOption("#f-sort", "duration");
  await page.selectOption("#f-order", "asc");
  await show();
  check((await rows()).length >= 2 && (await page.textContent("#status")) === "", "sorted by duration, both back");
});
