// The IDE in a real headless Chromium (Debian's `chromium`, driven by playwright-core):
// an analyst's first session, end to end against the real server. Run by
// crates/sluice/tests/ide.rs as `node ide_flow.mjs URL KEY ARTIFACT_DIR CHROMIUM`.
// Screenshots of the key screens go to ARTIFACT_DIR (under target/, not committed); the
// last line printed is a JSON report the Rust test checks.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const [url, key, outDir, executablePath] = process.argv.slice(2);
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

async function shot(name) {
  const path = `${outDir}/${String(report.screenshots.length + 1).padStart(2, "0")}-${name}.png`;
  await page.screenshot({ path });
  report.screenshots.push(path);
}
const step = (s) => console.error(`[ide] ${s}`);

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
  // The form keeps what was typed after the run re-inspects the module.
  await page.waitForTimeout(1500);
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

  step("observe");
  await page.getByRole("tab", { name: "Observe" }).click();
  // Invocations are recorded in batches: the live tail shows them as they land.
  await page.getByRole("button", { name: "Live tail" }).click();
  await call(`${jsonUrl}&limit=4`);  // parameters not cached yet: a real invocation
  await page.locator('table[aria-label="Recent invocations"] tbody tr').first().waitFor();
  report.invocations_shown = await page.locator('table[aria-label="Recent invocations"] tbody tr').count();
  await shot("observe");

  step("keys: create one (shown once)");
  await page.getByRole("button", { name: "Keys" }).click();
  await page.getByLabel("Name", { exact: true }).fill("ide test viewer");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = await page.getByLabel("New key", { exact: true }).inputValue();
  assert.ok(secret.length >= 32);
  await shot("keys");
  await page.keyboard.press("Escape");

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
