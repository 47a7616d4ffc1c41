// The approver's half of a held ssh login, in a real browser: run by tests/portal.rs while a
// real `ssh` waits at the gateway for its request to be approved. APPROVER signs in, finds the
// card of REQUESTER's request in Approvals, approves it with a comment. Same settings as
// portal.mjs (GH_URL, PASSWORD, CHROMIUM).
import { check, env, signIn, until, inBrowser } from "./portal-lib.mjs";

const approver = env("APPROVER");
const requester = env("REQUESTER");

await inBrowser(async (newPage) => {
  const page = await newPage(approver);
  await signIn(page, approver);
  await page.click("a[data-page=inbox]");
  await until("the held login's card", async () => (await page.textContent("#inbox-items")).includes(`${requester} asks for session`));
  check(true, `${requester}'s held session is in the approvals`);
  await page.getByLabel("Comment").first().fill("go ahead");
  await page.getByRole("button", { name: "Approve" }).first().click();
  await until("the inbox to empty", async () => !(await page.isHidden("#inbox-empty")));
  check(true, "approved in the browser");
});
