// A running RDP session watched live in the player: run by tests/rdp_gateway.rs while the
// session runs. USER_NAME (who may watch) logs in on /player, opens SESSION and sees the
// target's screen as it is: 1024x768 frames whose pixels are the checkerboard the test painted
// (COLORS, two #rrggbb). Same settings as the portal scripts (GH_URL, PASSWORD, CHROMIUM).
import { base, check, env, password, shot, until, inBrowser } from "./portal-lib.mjs";

const user = env("USER_NAME");
const session = env("SESSION");
const colors = env("COLORS").split(",").map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));

await inBrowser(async (newPage) => {
  const page = await newPage(user);
  await page.goto(`${base}/player?session=${encodeURIComponent(session)}`);
  await page.waitForSelector("#login:not([hidden])");
  await page.locator("#user").fill(user);
  await page.locator("#password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForSelector("#live-note:not([hidden])");
  check(true, "the running session opens live");
  const size = await until("a frame", () => page.evaluate(() => {
    const img = document.querySelector("#screen");
    return img && img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null;
  }), 30000);
  check(size[0] === 1024 && size[1] === 768, "frames of the target's size: " + size.join("x"));
  // The first frames can precede the target's first full paint: wait for the screen itself.
  const sample = () => page.evaluate(() => {
    const img = document.querySelector("#screen");
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    g.drawImage(img, 0, 0);
    const data = g.getImageData(0, 0, 64, 64).data;
    return [[16, 16], [48, 16], [16, 48], [48, 48]].map(([x, y]) => Array.from(data.slice((y * 64 + x) * 4, (y * 64 + x) * 4 + 3)));
  });
  const near = (a, b) => a.every((v, i) => Math.abs(v - b[i]) <= 8);
  let pixels = await sample();
  const deadline = Date.now() + 20000;
  while (!pixels.every((p) => colors.some((c) => near(p, c))) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    pixels = await sample();
  }
  check(pixels.every((p) => colors.some((c) => near(p, c))), "the frame shows the target's checkerboard: " + JSON.stringify(pixels));
  check(!near(pixels[0], pixels[1]), "neighbouring squares differ");
  await shot(page, "player-live-rdp");
});
