// The portal's Admin page in a real browser: run by tests/portal.rs. ADMIN (gateway-admins:
// services, plugins, policies, the cluster) turns a service off and on again, enables the TOTP
// plugin (USER's next sign-in then asks for a one-time code: a wrong one is refused, the right
// one signs in) and disables it again, reads the policies, explains two decisions, edits and
// removes session node NODE and stops managing NETWORK; USER (no admin right) sees no Admin
// link. Same settings as portal.mjs (GH_URL, PASSWORD, CHROMIUM, SCREENSHOTS); TARGET is
// `account@asset`, TOTP_SEED USER's base32 seed.
import { createHmac } from "node:crypto";
import { base, check, env, forgive, password, shot, signIn, until, inBrowser } from "./portal-lib.mjs";

const admin = env("ADMIN");
const user = env("USER_NAME");
const target = env("TARGET");
const seed = env("TOTP_SEED");
const node = env("NODE");
const network = env("NETWORK");

// RFC 6238: the 6-digit code for now, 30-second steps, HMAC-SHA1.
function totp(base32) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of base32.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const step = Buffer.alloc(8);
  step.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = createHmac("sha1", key).update(step).digest();
  const offset = mac[19] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1000000).padStart(6, "0");
}

await inBrowser(async (newPage) => {
  const page = await newPage(admin);
  // Requests in flight: a reload cancels them (net::ERR_ABORTED), so the page reloads only once
  // the Admin page has loaded everything it asked for.
  let inFlight = 0;
  page.on("request", () => { inFlight++; });
  page.on("requestfinished", () => { inFlight--; });
  page.on("requestfailed", () => { inFlight--; });
  await signIn(page, admin);
  check(!(await page.isHidden("#admin-link")), "an admin sees the Admin link");
  await page.click("#admin-link");
  await until("the services", async () => (await page.$$("#service-list input")).length >= 5);
  check(await page.isChecked("#service-discovery"), "discovery is on");
  await page.getByLabel("discovery").uncheck();
  await until("the change", async () => (await page.textContent("#status")) === "discovery is off.");
  await until("the Admin page's requests answered", async () => inFlight === 0);
  await page.reload();
  await until("the services again", async () => (await page.$$("#service-list input")).length >= 5);
  check(!(await page.isChecked("#service-discovery")), "discovery stays off after a reload");
  await page.getByLabel("discovery").check();
  await until("on again", async () => (await page.textContent("#status")) === "discovery is on.");

  // Plugins: the TOTP plugin is installed and granted, not enabled.
  await until("the plugins", async () => (await page.textContent("#plugin-rows")).includes("totp-mfa"));
  const plugin = page.locator('#plugin-rows tr[data-plugin="totp-mfa"]');
  check((await plugin.textContent()).includes("disabled"), "totp-mfa is listed, disabled");
  check((await plugin.textContent()).includes("secret totp-seed/*"), "with what it was granted");
  await plugin.getByRole("button", { name: "Enable" }).click();
  await until("enabled", async () => (await page.textContent("#status")) === "totp-mfa is enabled and running.");
  check((await plugin.textContent()).includes("enabled, running"), "its row says it runs");
  await shot(page, "portal-plugins");

  // USER's sign-in now asks for the one-time code after the password.
  const second = await newPage(user);
  await second.goto(base + "/portal");
  await second.waitForSelector("#signin:not([hidden])");
  await second.getByLabel("User name").fill(user);
  await second.getByLabel("Password", { exact: true }).fill(password);
  await second.keyboard.press("Enter");
  await second.waitForSelector("#signin-question:not([hidden])");
  forgive(401, "/api/v1/portal/login");
  check((await second.textContent("#signin-prompt")) === "One-time code", "the plugin's question is asked");
  check((await second.getAttribute("#signin-answer", "type")) === "password", "the code is not shown while typed");
  check(await second.isHidden("#nav"), "not signed in with the password alone");
  const code = totp(seed);
  await second.getByLabel("One-time code").fill(code === "000000" ? "111111" : "000000");
  await second.keyboard.press("Enter");
  await until("the refusal", async () => (await second.textContent("#signin-error")).includes("refused"));
  forgive(401, "/api/v1/portal/login");
  check(await second.isHidden("#nav"), "a wrong code does not sign in");
  check(!(await second.isHidden("#signin-question")) && (await second.inputValue("#signin-answer")) === "", "the code is asked again");
  await shot(second, "portal-sign-in-code");
  await second.getByLabel("One-time code").fill(code);
  await second.keyboard.press("Enter");
  await second.waitForSelector("#nav:not([hidden])");
  check(true, "signed in with the password and the one-time code");

  await plugin.getByRole("button", { name: "Disable" }).click();
  await until("disabled", async () => (await page.textContent("#status")) === "totp-mfa is disabled.");

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

  // A draft policy checked before deploying it: a typo with its line, then valid.
  await page.getByLabel("File name").fill("ops.cedar");
  await page.getByLabel("Cedar text").fill('@id("ops-view")\npermit (principal, action == Action::"no_such_action", resource);\n');
  await page.getByRole("button", { name: "Validate" }).click();
  await until("the problem", async () => (await page.textContent("#validate-result")).includes("ops.cedar:2:"));
  check(true, "the typo is reported with its file and line");
  await page.getByLabel("Cedar text").fill('@id("ops-view")\npermit (principal in Group::"gateway-admins", action == Action::"view_cluster", resource);\n');
  await page.getByRole("button", { name: "Validate" }).click();
  await until("valid", async () => (await page.textContent("#validate-result")) === "Valid: 1 policy.");
  check(true, "a valid draft says so");
  check(!(await page.isHidden("#admin-nodes")), "the cluster's nodes are shown to who may see them");
  await shot(page, "portal-admin");

  // The session node: edited, its network no longer managed, removed.
  await until("the node", async () => (await page.textContent("#node-rows")).includes(node));
  const nodeRow = page.locator(`#node-rows tr[data-node="${node}"]`);
  await until("its network", async () => (await page.textContent("#network-rows")).includes(network));
  await nodeRow.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Address users reach").fill("10.9.8.7");
  await page.getByLabel("Description", { exact: true }).fill("edited in the portal");
  await page.getByRole("button", { name: "Save" }).click();
  await until("saved", async () => (await page.textContent("#status")) === `Node ${node} saved.`);
  check((await nodeRow.textContent()).includes("10.9.8.7"), "the node's new address is shown");
  check(await page.isHidden("#node-form"), "the form closes");
  await page.locator(`#network-rows tr[data-network="${network}"]`).getByRole("button", { name: "Stop managing" }).click();
  await until("the network gone", async () => (await page.textContent("#status")) === `${network} is no longer managed.`);
  check(!(await page.textContent("#network-rows")).includes(network), "the network is no longer listed");
  page.once("dialog", (dialog) => dialog.accept());
  await nodeRow.getByRole("button", { name: "Remove" }).click();
  await until("removed", async () => (await page.textContent("#status")) === `Node ${node} removed (soft).`);
  check(!(await page.textContent("#node-rows")).includes(node), "a removed node is no longer listed");

  const other = await newPage(user);
  await signIn(other, user);
  check(await other.isHidden("#admin-link"), "a user without admin rights sees no Admin link");
});
