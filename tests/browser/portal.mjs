// The portal in a real browser: Debian's chromium driven by playwright-core. Run by
// tests/portal.rs, which starts a gateway with a real sshd behind it and passes:
//
//   GH_URL       the gateway's origin (its own CA: TLS errors are ignored for it only)
//   REQUESTER, APPROVER, PASSWORD   a user who may request access to TARGET, and one who may
//                approve; both sign in with PASSWORD
//   TARGET       `account@asset` the requester may ask a password release and a session for
//   VAULT_SECRET the target account's password in the vault (the reveal must show it, then hide it)
//   CHROMIUM     the browser (default /usr/bin/chromium)
//   SCREENSHOTS  optional: a directory for what the pages looked like (docs/portal.md)
//
// The requester signs in, finds the target in "My access", asks for its password; the approver,
// in a second browser context, sees the badge, approves with a comment; the requester checks
// the password out (shown, then hidden), checks it in, and asks for a session whose launch line
// names the gateway. Also at a phone's width. Exits 1 on the first failure or on any console
// error, failed request or unexpected HTTP error.

import { base, check, env, forgive, log, shot, signIn, until, inBrowser } from "./portal-lib.mjs";

const requester = env("REQUESTER");
const approver = env("APPROVER");
const target = env("TARGET");
const vaultSecret = env("VAULT_SECRET");

await inBrowser(async (newPage) => {
  const alice = await newPage(requester, { viewport: { width: 1280, height: 900 } });

  // The page, its CSP, the icon.
  const response = await alice.goto(base + "/portal");
  check(response.status() === 200, "GET /portal is 200");
  const csp = response.headers()["content-security-policy"] || "";
  check(csp.includes("script-src 'self'") && !csp.includes("unsafe-inline") && !csp.includes("unsafe-eval"),
    "the portal's CSP forbids inline and eval'd script: " + csp);
  const inline = await alice.$$eval("script:not([src])", (s) => s.length);
  check(inline === 0, "no inline script on the page");
  await shot(alice, "portal-sign-in");

  // A wrong password: a clear message, no session.
  await alice.getByLabel("User name").fill(requester);
  await alice.getByLabel("Password", { exact: true }).fill("not-the-password");
  const refused = alice.waitForResponse((r) => r.url().endsWith("/api/v1/portal/login"));
  await alice.keyboard.press("Enter");
  check((await refused).status() === 401, "a wrong password is refused");
  await until("the refusal", async () => (await alice.textContent("#signin-error")).includes("wrong user name or password"));
  await alice.waitForTimeout(300); // the browser's console line for the 401 comes on its own time
  forgive(401, "/api/v1/portal/login");

  await signIn(alice, requester);
  check((await alice.textContent("#user")) === requester, "signed in as " + requester);
  const cookieSeen = await alice.evaluate(() => document.cookie);
  check(!cookieSeen.includes("gatehouse"), "the session cookie is out of the script's reach (HttpOnly)");
  const cookies = await alice.context().cookies();
  const session = cookies.find((c) => c.name === "__Host-gatehouse");
  check(session && session.httpOnly && session.secure && session.sameSite === "Strict" && session.path === "/",
    "the cookie is __Host-, HttpOnly, Secure, SameSite=Strict: " + JSON.stringify(session && { ...session, value: "…" }));

  // A change without the CSRF token is refused, even with the cookie.
  const forged = await alice.evaluate(async (t) => {
    const r = await fetch("/api/v1/requests", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ target: t, access: "password", reason: "forged" }) });
    return r.status;
  }, target);
  check(forged === 403, "a request without X-CSRF-Token is refused (403)");
  await alice.waitForTimeout(300);
  forgive(403, "/api/v1/requests");

  // My access: the target, and how.
  await until("the target in My access", async () => (await alice.textContent("#access-rows")).includes(target));
  await alice.getByLabel("Search targets").fill("no-such-target");
  await until("the search to narrow", async () => !(await alice.textContent("#access-rows")).includes(target));
  await alice.getByLabel("Search targets").fill(target.split("@")[1]);
  await until("the search to find it", async () => (await alice.textContent("#access-rows")).includes(target));
  await until("the no-match message to go", async () => (await alice.textContent("#status")) === "");
  await shot(alice, "portal-my-access");

  // Ask for the password.
  await alice.getByRole("button", { name: "Request…" }).first().click();
  await alice.selectOption("#request-access", "password");
  await alice.getByLabel("Reason").fill("rotate the backup job's credentials");
  await alice.getByLabel("Ticket (optional)").fill("CHG-1042");
  await alice.getByRole("button", { name: "Send request" }).click();
  await until("the request in My requests", async () => (await alice.textContent("#request-rows")).includes("pending approval"));
  await shot(alice, "portal-my-requests");

  // The approver, in a second browser context.
  const carol = await newPage(approver);
  await signIn(carol, approver);
  await until("the badge", async () => (await carol.textContent("#badge")) === "1" && !(await carol.isHidden("#badge")));
  check(true, "the approver's badge shows 1");
  await carol.click("a[data-page=inbox]");
  await until("the inbox card", async () => (await carol.textContent("#inbox-items")).includes("rotate the backup job's credentials"));
  const card = await carol.textContent("#inbox-items");
  check(card.includes(requester) && card.includes("CHG-1042") && card.includes("0 of 1"), "the card shows requester, ticket and progress");
  await shot(carol, "portal-approvals");
  await carol.getByLabel("Comment").fill("ok for tonight");
  await carol.getByRole("button", { name: "Approve" }).click();
  await until("the inbox to empty", async () => !(await carol.isHidden("#inbox-empty")));
  await until("the badge to go", async () => await carol.isHidden("#badge"));
  check(true, "the badge is gone once decided");

  // Back to the requester: check out, see it, see it hidden, check in.
  await alice.click("a[data-page=access]");
  await alice.click("a[data-page=requests]");
  await until("the grant", async () => (await alice.textContent("#request-rows")).includes("available"));
  await alice.getByRole("button", { name: "Check out" }).click();
  await until("the reveal", async () => (await alice.textContent("#reveal-secret")) === vaultSecret);
  check(true, "the checked-out password is shown");
  check(/\d+ (min|s)/.test(await alice.textContent("#reveal-window")), "a countdown to the window's end");
  await shot(alice, "portal-checkout");
  await until("the reveal to hide", async () => !(await alice.textContent("#reveal-secret")).includes(vaultSecret), 40000);
  check(true, "the password hides again");
  await alice.getByRole("button", { name: "Check in" }).click();
  // Checked in: complete (or checked in, when the account's password changes after a check-in).
  await until("the check-in", async () => /complete|checked in/.test(await alice.textContent("#request-rows")));
  check(await alice.isHidden("#reveal"), "the reveal is gone after the check-in");

  // A session: requested, approved over the API by the approver's page, launched.
  await alice.click("a[data-page=access]");
  await until("My access again", async () => (await alice.textContent("#access-rows")).includes(target));
  await alice.getByRole("button", { name: "Request…" }).first().click();
  await alice.selectOption("#request-access", "session");
  await alice.getByLabel("Reason").fill("restart the service");
  await alice.getByRole("button", { name: "Send request" }).click();
  await until("the session request", async () => (await alice.textContent("#request-rows")).includes("pending approval"));
  await carol.click("a[data-page=requests]");
  await carol.click("a[data-page=inbox]");
  await until("the second card", async () => (await carol.textContent("#inbox-items")).includes("restart the service"));
  await carol.getByRole("button", { name: "Approve" }).click();
  await until("the inbox to empty again", async () => !(await carol.isHidden("#inbox-empty")));
  await alice.click("a[data-page=access]");
  await alice.click("a[data-page=requests]");
  await until("the session grant", async () => (await alice.$$("button:has-text('Connect')")).length > 0);
  await alice.getByRole("button", { name: "Connect" }).first().click();
  const command = await until("the launch line", async () => await alice.inputValue("#launch-command"));
  check(command.startsWith("ssh ") && command.includes(target.split("@")[1]), "the launch line is an ssh command: " + command);
  log("launch: " + command);

  // A phone's width: the same page, nothing wider than the screen.
  await alice.setViewportSize({ width: 390, height: 844 });
  const wide = await alice.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 390, `nothing scrolls sideways at 390 px (page is ${wide} px)`);
  await shot(alice, "portal-phone");

  // Sign out: the session ends on the server too.
  await alice.getByRole("button", { name: "Sign out" }).click();
  await alice.waitForSelector("#signin:not([hidden])");
  const after = await alice.evaluate(async () => (await fetch("/api/v1/portal/session")).json());
  check(after.signed_in === false, "after signing out the cookie no longer works");

});
