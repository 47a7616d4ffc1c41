// The portal's Admin page in a real browser: run by tests/portal.rs. ADMIN (gateway-admins:
// services, policies, the cluster) turns a service off and on again, reads the policies,
// explains two decisions; USER (no admin right) sees no Admin link. Same settings as
// portal.mjs (GH_URL, PASSWORD, CHROMIUM, SCREENSHOTS); TARGET is `account@asset`.
import { check, env, shot, signIn, until, inBrowser } from "./portal-lib.mjs";

const admin = env("ADMIN");
const user = env("USER_NAME");
const target = env("TARGET");

await inBrowser(async (newPage) => {
  const page = await newPage(admin);
  await signIn(page, admin);
  check(!(await page.isHidden("#admin-link")), "an admin sees the Admin link");
  await page.click("#admin-link");
  await until("the services", async () => (await page.$$("#service-list input")).length >= 5);
  check(await page.isChecked("#service-discovery"), "discovery is on");
  await page.getByLabel("discovery").uncheck();
  await until("the change", async () => (await page.textContent("#status")) === "discovery is off.");
  await page.reload();
  await until("the services again", async () => (await page.$$("#service-list input")).length >= 5);
  check(!(await page.isChecked("#service-discovery")), "discovery stays off after a reload");
  await page.getByLabel("discovery").check();
  await until("on again", async () => (await page.textContent("#status")) === "discovery is on.");

  await until("the policies", async () => (await page.textContent("#policy-rows")).includes("rita-may-request"));
  check((await page.textContent("#policy-rows")).includes("portal.cedar:"), "each policy with its file and line");
  await page.locator("#x-user").fill("rita");
  await page.locator("#x-target").fill(target);
  await page.selectOption("#x-action", "request_access");
  await page.getByRole("button", { name: "Explain" }).click();
  await until("the explanation", async () => (await page.textContent("#explain-result")).startsWith("Allowed"));
  check((await page.textContent("#explain-result")).includes("rita-may-request"), "allowed, by rita-may-request");
  await page.locator("#x-user").fill("ron");
  await page.selectOption("#x-action", "ssh_session");
  await page.getByRole("button", { name: "Explain" }).click();
  await until("the second explanation", async () => (await page.textContent("#explain-result")).startsWith("Denied"));
  check(true, "ron's ssh session is denied (nothing permits it)");
  check(!(await page.isHidden("#admin-nodes")), "the cluster's nodes are shown to who may see them");
  await shot(page, "portal-admin");

  const other = await newPage(user);
  await signIn(other, user);
  check(await other.isHidden("#admin-link"), "a user without admin rights sees no Admin link");
});
