// A recorded VNC session in the player: run by tests/vnc.rs after the session ended. USER_NAME
// (an auditor) logs in on /player, opens SESSION and gets the gateway's video of it: 800x600,
// the typed text listed among the events, and the last frame the green the session ended with.
// Same settings as the portal scripts (GH_URL, PASSWORD, CHROMIUM).
import { base, check, env, password, shot, until, inBrowser } from "./portal-lib.mjs";

const user = env("USER_NAME");
const session = env("SESSION");

await inBrowser(async (newPage) => {
  const page = await newPage(user);
  await page.goto(`${base}/player?session=${encodeURIComponent(session)}`);
  await page.waitForSelector("#login:not([hidden])");
  await page.locator("#user").fill(user);
  await page.locator("#password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForSelector("#video:not([hidden])", { timeout: 180000 });
  await page.waitForFunction(() => document.querySelector("#video").readyState >= 1, null, { timeout: 60000 });
  const video = await page.evaluate(() => {
    const v = document.querySelector("#video");
    return { width: v.videoWidth, height: v.videoHeight, duration: v.duration };
  });
  check(video.width === 800 && video.height === 600, `the video has the target's size (${video.width}x${video.height})`);
  check(video.duration > 1, `the video lasts (${video.duration} s)`);
  const typed = await until("the typing among the events", () => page.$$eval("ol#events li.seekable", (items) =>
    items.map((i) => i.textContent).find((t) => t.includes("xsetroot -solid green"))));
  check(typed, "the typed text is a seekable event: " + typed.trim());
  // The session's last frame: the desktop the typed command turned green.
  const pixel = await page.evaluate(async () => {
    const v = document.querySelector("#video");
    v.pause();
    const seeked = new Promise((r) => v.addEventListener("seeked", r, { once: true }));
    v.currentTime = Math.max(0, v.duration - 0.3);
    await seeked;
    const c = document.createElement("canvas");
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const g = c.getContext("2d", { willReadFrequently: true });
    g.drawImage(v, 0, 0);
    return Array.from(g.getImageData(700, 500, 1, 1).data.slice(0, 3));
  });
  check(pixel[1] > 200 && pixel[0] < 60 && pixel[2] < 60, "the video ends on the green desktop: " + pixel.join(","));
  await shot(page, "player-vnc");
});
