// Drives the operator's dashboard in headless chromium (playwright-core):
// loads /admin, enters the admin token, checks the seeded tenant's row in the
// tenants table, opens its page, checks its chart has a drawn series, and
// saves screenshots. Usage: node dashboard.mjs <base url> <admin token> <slug> <out dir>
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, token, slug, out] = process.argv.slice(2);
const userDataDir = mkdtempSync(join(tmpdir(), "tenantry-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1360, height: 900 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const fail = async (page, why) => {
  await page.screenshot({ path: join(out, "dashboard-failure.png"), fullPage: true });
  console.error("browser test failed: " + why);
  process.exit(1);
};
const page = context.pages()[0] || (await context.newPage());
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
const external = [];
page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
try {
  await page.goto(base + "/admin");
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  const row = page.locator(`#tenants-table tr[data-tenant="${slug}"]`);
  await row.waitFor({ timeout: 15000 });
  // Sorting by another column keeps the row.
  await page.click('th[data-sort="p99"]');
  await row.waitFor({ timeout: 5000 });
  await page.screenshot({ path: join(out, "dashboard-overview.png"), fullPage: true });
  // The token is asked once: a reload goes straight to the overview.
  await page.reload();
  await row.waitFor({ timeout: 15000 });
  await row.locator("a.tenant").click();
  await page.locator("#charts svg path").first().waitFor({ state: "attached", timeout: 15000 });
  const drawn = await page.locator("#charts svg path").count();
  if (drawn < 4) await fail(page, `expected the tenant's charts, found ${drawn} series`);
  const title = await page.locator("section h2").first().innerText();
  if (!title.includes(slug)) await fail(page, `the tenant page names ${title}`);
  await page.screenshot({ path: join(out, "dashboard.png"), fullPage: true });
} catch (e) {
  await fail(page, String(e));
}
if (errors.length) await fail(page, "page errors: " + errors.join("; "));
if (external.length) await fail(page, "requests outside the server: " + external.join(", "));
await context.close();
console.log("browser test passed: screenshots in " + out);
