// Drives the Aloha-rs console in Debian's chromium, headless:
//   node console.mjs <master base URL> <screenshot dir> [token]
// With a token (a master with --auth required), it first logs in through the login page and
// every form then carries the session's CSRF token.
// Submits an app through the form and sees it reach FINISHED live (no reload), kills a
// running app, reads its logs, walks every page, and saves screenshots. Exits non-zero (with
// the reason) at the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, out, token] = process.argv.slice(2);
if (!base || !out) {
  console.error("usage: node console.mjs <base URL> <screenshot dir>");
  process.exit(2);
}
mkdirSync(out, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = [];
page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
let navigations = 0;
page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });

async function shot(name) {
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
}
function fail(msg) { throw new Error(msg); }
// Calls made from outside the browser (node's fetch) carry the token themselves.
const apiHeaders = { "content-type": "application/json",
                     ...(token ? { authorization: `Bearer ${token}` } : {}) };

try {
  if (token) {
    // Not logged in: to the login page; a wrong token is refused; the right one logs in.
    await page.goto(`${base}/ui/apps`);
    if (!page.url().endsWith("/ui/login")) fail(`not sent to the login page: ${page.url()}`);
    await page.getByLabel("Token").fill("not-the-token-0123456789");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
    await shot("00-login-refused");
    // The refused login answered 401, which chromium logs as a failed resource: expected.
    const expected = problems.filter((p) => p.includes("status of 401"));
    if (expected.length !== problems.length) fail(problems.join("\n"));
    problems.length = 0;
    await page.getByLabel("Token").fill(token);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("button", { name: "Log out" }).waitFor();
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === "aloha_session");
    if (!session || !session.httpOnly || session.sameSite !== "Strict") {
      fail(`no HttpOnly SameSite=Strict session cookie: ${JSON.stringify(cookies)}`);
    }
  }
  // The cluster page.
  const r = await page.goto(`${base}/`);
  if (r.status() !== 200) fail(`GET / answered ${r.status()}`);
  const csp = r.headers()["content-security-policy"] || "";
  if (!csp.includes("default-src 'self'")) fail(`no CSP default-src 'self': ${csp}`);
  await page.getByRole("heading", { name: "Cluster" }).waitFor();
  await shot("01-cluster");

  // Submit a slow app through the form; its page follows it to FINISHED without a reload.
  await page.getByRole("link", { name: "Submit", exact: true }).click();
  await page.getByLabel("Name", { exact: true }).fill("from-the-console");
  await page.getByLabel("Command (process; split on spaces)").fill("sh -c 'sleep 2; echo done'");
  // A command with quotes needs the JSON spec.
  await page.getByLabel("Or the spec as JSON").fill('{"command": ["sh", "-c", "echo hello from the console; sleep 2; echo done"]}');
  await shot("02-submit-form");
  await page.getByRole("button", { name: "Submit" }).click();
  await page.waitForURL(/\/ui\/apps\/app-/);
  const appUrl = page.url();
  const before = navigations;
  await page.locator(".lead .state", { hasText: "FINISHED" }).waitFor({ timeout: 30000 });
  if (navigations !== before) fail(`the page reloaded (${navigations - before} navigations) instead of updating live`);
  await page.locator("pre.log", { hasText: "hello from the console" }).waitFor({ timeout: 15000 });
  await shot("03-app-finished-live");

  // Kill a running app from its page.
  await page.goto(`${base}/ui/submit`);
  await page.getByLabel("Name", { exact: true }).fill("to-kill");
  await page.getByLabel("Command (process; split on spaces)").fill("sleep 600");
  await page.getByRole("button", { name: "Submit" }).click();
  await page.waitForURL(/\/ui\/apps\/app-/);
  await page.locator(".lead .state", { hasText: "RUNNING" }).waitFor({ timeout: 30000 });
  await page.getByLabel("Reason").fill("stopped in the browser test");
  await shot("04-app-running");
  await page.getByRole("button", { name: "Kill" }).click();
  await page.locator(".lead .state", { hasText: "KILLED" }).waitFor({ timeout: 30000 });
  await shot("05-app-killed");

  // Its logs, stderr too.
  await page.goto(appUrl);
  await page.locator("pre.log", { hasText: "done" }).waitFor({ timeout: 15000 });
  await page.getByLabel("Stream").selectOption("stderr");
  await shot("06-app-logs");

  // Every other page renders, with headings and no script errors.
  for (const [path, heading, name] of [
    ["/ui/apps", "Apps", "07-apps"],
    ["/ui/apps?state=KILLED", "Apps", "08-apps-killed"],
    ["/ui/workers", "Workers", "09-workers"],
    ["/ui/schedules", "Schedules", "10-schedules"],
    ["/ui/events", "Events", "11-events"],
  ]) {
    const resp = await page.goto(`${base}${path}`);
    if (resp.status() !== 200) fail(`GET ${path} answered ${resp.status()}`);
    await page.getByRole("heading", { name: heading, exact: true }).waitFor();
    await shot(name);
  }
  // The filter found the killed app.
  await page.goto(`${base}/ui/apps?state=KILLED`);
  await page.getByText("to-kill").waitFor();

  // The live event feed shows a submission made elsewhere.
  await page.goto(`${base}/ui/events`);
  await page.waitForTimeout(500);
  const sub = await fetch(`${base}/api/v1/apps`, {
    method: "POST", headers: apiHeaders,
    body: JSON.stringify({ name: "feed-probe", kind: "process", spec: { command: ["true"] } }),
  });
  if (sub.status !== 201) fail(`POST /api/v1/apps answered ${sub.status}`);
  const id = (await sub.json()).id;
  await page.locator("ul.feed li", { hasText: id }).first().waitFor({ timeout: 15000 });
  await shot("12-events-live");

  // A schedule: its page shows the next runs; "Trigger a run now" adds a run live.
  const sch = await fetch(`${base}/api/v1/schedules`, {
    method: "POST", headers: apiHeaders,
    body: JSON.stringify({ name: "nightly", app: { kind: "process", spec: { command: ["true"] } },
                           cron: "0 3 * * *", time_zone: "Europe/Berlin" }),
  });
  if (sch.status !== 201) fail(`POST /api/v1/schedules answered ${sch.status}`);
  const sid = (await sch.json()).id;
  await page.goto(`${base}/ui/schedules`);
  await page.getByRole("link", { name: sid }).click();
  await page.getByRole("heading", { name: "Next runs" }).waitFor();
  await page.getByText("None yet.").waitFor();
  await page.getByRole("button", { name: "Trigger a run now" }).click();
  await page.locator("table", { hasText: "FINISHED" }).waitFor({ timeout: 30000 });
  await page.getByRole("button", { name: "Pause" }).click();
  await page.locator(".lead .state", { hasText: "PAUSED" }).waitFor();
  await shot("13-schedule");

  if (problems.length) fail(problems.join("\n"));
  if (token) {
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(/\/ui\/login$/);
    await shot("99-logged-out");
  }
  console.log(`console: every check passed; screenshots in ${out}`);
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(`console test failed at ${page.url()}: ${e.message}`);
  if (problems.length) console.error(problems.join("\n"));
  await browser.close();
  process.exit(1);
}
await browser.close();
