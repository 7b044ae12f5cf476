// The IDE in a real headless Chromium (Debian's `chromium`, driven by playwright-core):
// an analyst's first session, end to end against the real server. Run by
// crates/sluice/tests/ide.rs as `node ide_flow.mjs URL KEY ARTIFACT_DIR CHROMIUM SECOND_WS
// SECOND_FEED`, where the test has set up a second workspace with one feed for the switcher.
// Screenshots of the key screens go to ARTIFACT_DIR (under target/, not committed); the
// last line printed is a JSON report the Rust test checks.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const [url, key, outDir, executablePath, secondWs, secondFeed] = process.argv.slice(2);
mkdirSync(outDir, { recursive: true });
const report = { screenshots: [] };
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
// A laptop screen.
const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
const page = await context.newPage();
page.setDefaultTimeout(120_000);
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
// HTTP errors the flow provokes on purpose (a broken module) are logged by Chromium as
// console errors too; they are reported, not failures. Script errors are failures.
report.http_errors = [];
page.on("console", (m) => {
  if (m.type() !== "error") return;
  if (m.text().startsWith("Failed to load resource")) report.http_errors.push(m.text());
  else problems.push(`console: ${m.text()}`);
});

// The IDE asks in its own dialogs: a native confirm() or alert() is a failure.
page.on("dialog", async (d) => { problems.push(`native ${d.type()}: ${d.message()}`); await d.dismiss(); });

async function shot(name) {
  const path = `${outDir}/${String(report.screenshots.length + 1).padStart(2, "0")}-${name}.png`;
  await page.screenshot({ path });
  report.screenshots.push(path);
}
const step = (s) => console.error(`[ide] ${s}`);
/** Wait until `check()` is true (polling: a server-side effect has no event to wait on). */
async function until(check, what, ms = 30_000) {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
    if (await check()) return;
  }
  throw new Error(`timed out waiting for ${what}`);
}
/** The control API as the test itself (not the page) sees it, with `as` as the key. */
async function apiAs(as, path) {
  const r = await page.request.get(`${url}${path}`, { headers: { Authorization: `Bearer ${as}` } });
  return { status: r.status(), body: await r.json().catch(() => null) };
}

/** Replace the editor's whole text the way a user would: select all, type. */
async function setCode(text) {
  await page.locator(".cm-content").click();
  await page.keyboard.press("Control+A");
  await page.keyboard.insertText(text);
}

try {
  step("log in");
  await page.goto(`${url}/`);
  await page.getByLabel("API key").fill(key);
  await shot("login");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator('#feed-list a[data-feed="hello"]').waitFor();
  assert.equal(await page.locator("#ws-select").inputValue(), "demo");
  // The first load, measured by the browser: compressed bytes of the page and every asset
  // except the (lazily loaded) editor bundle.
  report.first_load_bytes = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource").filter((r) => r.name.includes("/ide/") && !r.name.includes("/ide/editor."));
    return nav.encodedBodySize + res.reduce((n, r) => n + r.encodedBodySize, 0);
  });
  await page.getByLabel("Search feeds").fill("sales");
  await page.locator('#feed-list a[data-feed="hello"]').waitFor({ state: "detached" });
  assert.ok(await page.locator('#feed-list a[data-feed="sales_by_region"]').isVisible());
  await page.getByLabel("Search feeds").fill("");
  await shot("feeds");

  step("data sources: tables and columns of the warehouse");
  await page.locator("#source-list summary", { hasText: "warehouse" }).click();
  await page.locator("#source-list .mono", { hasText: /^sales$/ }).waitFor();

  step("new feed from the template");
  await page.getByRole("button", { name: "+ New feed" }).click();
  await page.getByLabel(/^Name/).fill("ide_top");
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator(".cm-content", { hasText: "def ide_top(" }).waitFor();
  // The template as the API serves it (the same as `sluice init`), named for this feed.
  const templates = await (await page.request.get(`${url}/api/v1/templates`, { headers: { Authorization: `Bearer ${key}` } })).json();
  const original = templates[0].source.replaceAll("{feed}", "ide_top");
  assert.match(original, /sluice\.sql\(/);
  // The parameter form comes from the signature (the module was inspected in a worker).
  await page.locator("#param-region").waitFor();
  assert.equal(await page.locator("#param-region").inputValue(), "EU");
  assert.equal(await page.locator("#param-limit").inputValue(), "10");
  await page.locator("#param-region").fill("APAC");
  await shot("editor");

  step("run without deploying");
  await page.getByRole("button", { name: /Run/ }).click();
  await page.locator(".grid-row").first().waitFor();
  const meta = await page.locator("#run-meta").textContent();
  assert.match(meta, /^10 rows · .* on the server/, meta);
  report.run_meta = meta;
  // The form keeps what was typed after the run re-inspects the module: the inspection
  // started with the results (the form went aria-busy) and has landed once it is not.
  await page.locator('#params[aria-busy="false"]').waitFor();
  assert.equal(await page.locator("#param-region").inputValue(), "APAC");
  report.grid_rows_in_dom = await page.locator(".grid-row").count();
  await shot("results");

  step("chart");
  await page.getByRole("tab", { name: "Chart" }).click();
  await page.getByLabel("X", { exact: true }).selectOption("product");
  await page.getByLabel("Y", { exact: true }).selectOption("revenue");
  await page.getByLabel("Kind", { exact: true }).selectOption("bar");
  await page.locator(".chart svg rect").first().waitFor();
  report.chart_bars = await page.locator(".chart svg rect").count();
  assert.equal(report.chart_bars, 10);
  await shot("chart");

  step("100,000 rows: the table stays virtualized");
  await page.getByRole("button", { name: "+ New feed" }).click();
  await page.getByLabel(/^Name/).fill("ide_days");
  await page.getByLabel("Template").selectOption("python");
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator(".cm-content", { hasText: "def ide_days(" }).waitFor();
  await page.locator("#param-days").fill("100000");
  await page.locator("#run-limit").selectOption("100000");
  await page.getByRole("tab", { name: "Results" }).click();
  await page.getByRole("button", { name: /Run/ }).click();
  await page.locator("#run-meta", { hasText: "100,000 rows" }).waitFor();
  await page.locator(".grid-row").first().waitFor();
  report.big_rows_in_dom = await page.locator(".grid-row").count();
  assert.ok(report.big_rows_in_dom < 200, `${report.big_rows_in_dom} rows in the DOM`);
  await page.locator(".grid").focus();
  const t0 = Date.now();
  await page.keyboard.press("End");
  await page.locator('.grid-row[aria-rowindex="100001"]').waitFor();
  report.big_scroll_to_end_ms = Date.now() - t0;
  await shot("results-100k");

  step("insert a sluice.sql snippet from the data sources panel");
  // The cursor goes to the end of the code (moving it changes nothing), then the sidebar's
  // button inserts the call there.
  await page.locator(".cm-content").click();
  await page.keyboard.press("Control+End");
  await page.getByRole("button", { name: "Insert a sluice.sql snippet for warehouse.sales" }).click();
  await page.locator(".cm-content", { hasText: /from sales limit :limit/ }).waitFor();
  // It went in through the editor like typing, so the autosaved draft on the server has it.
  const snippet = /sluice\.sql\(\s*"warehouse",\s*"select [a-z_, ]+ from sales limit :limit"/;
  await until(async () => snippet.test((await apiAs(key, "/api/v1/workspaces/demo/drafts/ide_days")).body?.source ?? ""),
    "the draft saved with the snippet");
  report.snippet_inserted = true;
  await shot("snippet");

  await page.locator('#feed-list a[data-feed="ide_top"]').click();
  await page.locator(".cm-content", { hasText: "def ide_top(" }).waitFor();

  step("a broken module is marked at its line");
  await setCode(original.replace("import sluice", "import sluice\nimport this_module_does_not_exist"));
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.locator("#p-deploy li.fail").waitFor();
  report.deploy_error = await page.locator("#p-deploy li.fail").textContent();
  assert.match(report.deploy_error, /line \d+/);
  await page.locator(".cm-lint-marker-error").first().waitFor();
  await shot("error-marker");
  await setCode(original);

  step("deploy");
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.locator("#p-deploy li.done").waitFor();
  report.deploy_progress = await page.locator("#p-deploy li").allTextContents();
  assert.match(report.deploy_progress.at(-1), /ide_top: revision 1 is live/);
  await page.locator("#doc-status", { hasText: "live r1" }).waitFor();
  await shot("deployed");

  step("call the feed URL from the Connect panel");
  await page.getByRole("tab", { name: "Connect" }).click();
  const jsonUrl = await page.getByLabel("JSON", { exact: true }).inputValue();
  const csvUrl = await page.getByLabel("CSV", { exact: true }).inputValue();
  await page.locator('.snip[data-tool="curl"] pre', { hasText: "curl" }).waitFor();
  await page.locator('.snip[data-tool="excel"]').waitFor();
  await shot("connect");
  const call = async (u) => {
    const r = await page.request.get(u);
    assert.equal(r.status(), 200, `${u}: ${await r.text()}`);
    return r;
  };
  const csv = await (await call(csvUrl)).text();
  assert.match(csv, /^product,category,units,revenue\r?\n/);
  report.rows_r1 = (await (await call(jsonUrl)).json()).length;
  assert.equal(report.rows_r1, 10);

  step("second revision, then roll back");
  await page.getByRole("tab", { name: "Results" }).click();
  await setCode(original.replace("limit: int = 10", "limit: int = 3"));
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.locator("#p-deploy li.done", { hasText: "revision 2" }).waitFor();
  report.rows_r2 = (await (await call(jsonUrl)).json()).length;
  assert.equal(report.rows_r2, 3);
  await page.getByRole("tab", { name: "Revisions" }).click();
  await page.locator(".diff .del", { hasText: "limit: int = 10" }).waitFor();
  await page.locator(".diff .add", { hasText: "limit: int = 3" }).waitFor();
  await shot("revisions-diff");
  await page.getByRole("button", { name: "Roll back to r1" }).click();
  await page.locator("#doc-status", { hasText: "live r1" }).waitFor();
  report.rows_after_rollback = (await (await call(jsonUrl)).json()).length;
  assert.equal(report.rows_after_rollback, 10);
  await shot("rolled-back");

  step("observe: the server's per-minute metrics, the live tail");
  await page.getByRole("tab", { name: "Observe" }).click();
  const requestsStat = page.locator('[data-stat="requests"] b');
  await requestsStat.waitFor();
  const shownCalls = async () => Number((await requestsStat.textContent()).replace(/[^0-9]/g, ""));
  const before = await shownCalls();
  // Invocations are recorded in batches: the live tail shows them as they land, and each
  // one it sees makes the panel ask the server for the numbers again.
  await page.getByRole("button", { name: "Live tail" }).click();
  await call(`${jsonUrl}&limit=4`);  // parameters not cached yet: a real invocation
  await page.locator('table[aria-label="Recent invocations"] tbody tr').first().waitFor();
  report.invocations_shown = await page.locator('table[aria-label="Recent invocations"] tbody tr').count();
  await page.waitForFunction(
    ([sel, n]) => Number(document.querySelector(sel)?.textContent.replace(/[^0-9]/g, "")) > n,
    ['[data-stat="requests"] b', before]);
  report.metrics_requests = await shownCalls();
  report.metrics_bars = await page.locator(".chart.traffic svg rect").count();
  assert.ok(report.metrics_bars >= 1, "the per-minute chart has a bar");
  await page.getByLabel("Window", { exact: true }).selectOption("15m");
  await page.locator(".chart.traffic[aria-label^='Calls per minute, last 15 minutes']").waitFor();
  await page.locator("#p-observe").evaluate((el) => { el.scrollTop = 0; });  // the numbers, for the screenshot
  await shot("observe");

  step("keys: create one (shown once), then revoke it");
  await page.getByRole("button", { name: "Keys" }).click();
  await page.getByLabel("Name", { exact: true }).fill("ide test viewer");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = await page.getByLabel("New key", { exact: true }).inputValue();
  assert.ok(secret.length >= 32);
  const keyRow = page.locator('table[aria-label="Keys"] tr', { hasText: "ide test viewer" });
  await keyRow.waitFor();
  await shot("keys");
  assert.equal((await apiAs(secret, "/api/v1/whoami")).status, 200, "the new key works");
  // Shown once: opened again, the dialog lists the key but nowhere shows its secret.
  await page.keyboard.press("Escape");
  await page.locator("#dialog").waitFor({ state: "hidden" });
  await page.getByRole("button", { name: "Keys" }).click();
  await keyRow.waitFor();
  assert.equal(await page.getByLabel("New key", { exact: true }).count(), 0);
  assert.ok(!(await page.locator("#dialog").innerText()).includes(secret));
  assert.ok(!JSON.stringify((await apiAs(key, "/api/v1/keys")).body).includes(secret));
  step("revoke it through the confirmation dialog: Escape cancels, then confirm");
  const revokeBtn = page.getByRole("button", { name: "Revoke key ide test viewer" });
  const confirmBox = page.getByRole("alertdialog", { name: "Revoke ide test viewer?" });
  const focused = (loc) => loc.evaluate((el) => el === document.activeElement || el.contains(document.activeElement));
  await revokeBtn.click();
  await confirmBox.waitFor();
  assert.ok(await focused(confirmBox), "focus moves into the confirmation");
  assert.ok(await focused(confirmBox.getByRole("button", { name: "Cancel" })), "on Cancel, the safe choice");
  await shot("revoke-confirm");
  await page.keyboard.press("Escape");
  await confirmBox.waitFor({ state: "hidden" });
  assert.ok(await page.locator("#dialog").isVisible(), "Escape closes only the confirmation");
  assert.ok(await focused(revokeBtn), "focus returns to the Revoke button");
  assert.equal((await apiAs(secret, "/api/v1/whoami")).status, 200, "cancelled: the key still works");
  // Again, from the keyboard: Enter on the focused button, then confirm.
  await page.keyboard.press("Enter");
  await confirmBox.waitFor();
  await confirmBox.getByRole("button", { name: "Revoke key" }).click();
  await confirmBox.waitFor({ state: "hidden" });
  await keyRow.waitFor({ state: "detached" });
  assert.ok(await focused(page.locator("#dialog")), "focus stays in the keys dialog");
  const listed = (await apiAs(key, "/api/v1/keys")).body.map((k) => k.name);
  assert.ok(!listed.includes("ide test viewer"), `revoked keys are not listed: ${listed}`);
  report.revoked_key_status = (await apiAs(secret, "/api/v1/whoami")).status;
  assert.equal(report.revoked_key_status, 401);
  await page.keyboard.press("Escape");
  await page.locator("#dialog").waitFor({ state: "hidden" });

  step("delete a feed");
  await page.locator('#feed-list a[data-feed="hello"]').click();
  await page.locator(".cm-content", { hasText: "def hello(" }).waitFor();
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.getByRole("button", { name: "Delete feed" }).click();
  await page.locator('#feed-list a[data-feed="hello"]').waitFor({ state: "detached" });
  await page.locator("#welcome").waitFor();
  report.deleted_feed_status = (await apiAs(key, "/api/v1/workspaces/demo/feeds/hello")).status;
  assert.equal(report.deleted_feed_status, 404);
  assert.equal((await page.request.get(`${url}/feeds/demo/hello?api_key=${key}`)).status(), 404);
  await shot("deleted");

  step("switch workspace and back");
  await page.getByLabel("Workspace", { exact: true }).selectOption(secondWs);
  await page.locator(`#feed-list a[data-feed="${secondFeed}"]`).waitFor();
  assert.equal(await page.locator('#feed-list a[data-feed="ide_top"]').count(), 0);
  assert.ok(page.url().endsWith(`#/${secondWs}`), page.url());
  await page.locator("#source-list", { hasText: "None granted to this workspace." }).waitFor();
  await page.locator(`#feed-list a[data-feed="${secondFeed}"]`).click();
  await page.getByRole("tab", { name: "Observe" }).click();
  // The test made one of this feed's calls fail: the panel counts it.
  await page.locator('[data-stat="errors"] b', { hasText: /^[1-9]/ }).waitFor();
  report.second_ws_feeds = await page.locator("#feed-list a").evaluateAll((as) => as.map((a) => a.dataset.feed));
  await shot("second-workspace");
  await page.getByLabel("Workspace", { exact: true }).selectOption("demo");
  await page.locator('#feed-list a[data-feed="ide_top"]').click();
  await page.locator(".cm-content", { hasText: "def ide_top(" }).waitFor();

  step("drafts survive a reload");
  await page.getByRole("tab", { name: "Results" }).click();
  await setCode(`${original}\n# unpublished change\n`);
  await page.locator("#save-status", { hasText: "Draft saved" }).waitFor();
  await page.reload();
  await page.locator(".cm-content", { hasText: "# unpublished change" }).waitFor();
  await page.locator('#feed-list a[data-feed="ide_top"] .badge.draft').waitFor();

} catch (e) {
  // What the page showed when it went wrong: a screenshot and the panels' text.
  await shot("failure").catch(() => {});
  const text = async (sel) => page.locator(sel).first().innerText().catch(() => "");
  console.error(`run-meta: ${await text("#run-meta")}\noutput: ${await text("#p-output")}\ndeploy: ${await text("#p-deploy")}`);
  console.error(`http errors: ${report.http_errors.join("\n")}\nproblems: ${problems.join("\n")}`);
  await browser.close();
  throw e;
}
assert.deepEqual(problems, []);
await browser.close();
console.log(JSON.stringify(report));
