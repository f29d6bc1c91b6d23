// Drives the admin console (/admin) in Debian's headless Chromium: loads the structures with
// the admin token, sees who is online, turns chat access off for students of one structure,
// changes a rule, then goes through the users (filtered and searched), the classes, the ENT
// groups and the audit log (searched), and switches to English.
// Usage: node console.mjs BASE_URL TOKEN STRUCTURE_ID [SCREENSHOT_DIR]
import { chromium } from "playwright-core";

const [base, token, structure, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const shot = async (page, name) => {
  if (shots) await page.screenshot({ path: `${shots}/console-${name}.png`, fullPage: true });
};
const expect = (condition, message) => {
  if (!condition) throw new Error(message);
};
try {
  const context = await browser.newContext({ locale: "fr-FR" });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const violations = [];
  // The wrong token's 401 is expected; a refused script, style or request is not.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("401")) violations.push(m.text());
  });
  page.on("pageerror", (e) => violations.push(e.message));
  await page.goto(base + "/admin");

  // A wrong token is refused with a visible message.
  await page.fill("#token", "wrong");
  await page.click("#load");
  await page.waitForFunction(() => document.getElementById("status").className === "error");

  await page.fill("#token", token);
  await page.click("#load");
  const section = `section[data-structure="${structure}"]`;
  const students = page.locator(`${section} input[data-profile="student"]`);
  await students.waitFor();
  // One pupil is online while the console loads.
  const online = await page.locator(`${section} [data-online]`).getAttribute("data-online");
  expect(online === "1", `one user should be online, the page says ${online}`);
  expect((await page.locator(`${section} h2`).textContent()).includes("1 en ligne"),
         "the online count is shown");
  await shot(page, "structures");
  expect(await students.isChecked(), "student access should start on");
  await students.uncheck();
  await page.waitForFunction(() => {
    const s = document.getElementById("status");
    return s.className === "ok" && s.textContent.includes("accès fermé");
  });

  const rule = page.locator(`${section} select[data-from="student"][data-to="student"]`);
  await rule.selectOption("same_structure");
  await page.waitForFunction(() =>
    document.getElementById("status").textContent.includes("Règle mise à jour"));

  // Users: every user of the school, then one class, then a search by name.
  await page.click('#tabs button[data-tab="users"]');
  await page.waitForSelector("#user-table tbody tr");
  expect(await page.locator("#user-table tbody tr").count() === 3, "three users listed");
  await page.selectOption("#user-class", "6A");
  await page.click("#user-find");
  await page.waitForFunction(() => document.querySelectorAll("#user-table tbody tr").length === 2);
  await page.selectOption("#user-class", "");
  await page.fill("#user-search", "léa");
  await page.press("#user-search", "Enter");
  await page.waitForFunction(() => {
    const rows = document.querySelectorAll("#user-table tbody tr");
    return rows.length === 1 && rows[0].dataset.username === "eleve1";
  });
  await shot(page, "users");

  // Classes and groups, with their members on demand.
  await page.click('#tabs button[data-tab="classes"]');
  await page.click('tr[data-class="6A"] button');
  await page.waitForFunction(() =>
    document.querySelector('tr[data-class="6A"]').textContent.includes("eleve1, prof1"));
  await shot(page, "classes");
  await page.click('#tabs button[data-tab="groups"]');
  await page.click('tr[data-group="theatre"] button');
  await page.waitForFunction(() =>
    document.querySelector('tr[data-group="theatre"]').textContent.includes("eleve1"));

  // The audit log has the toggle made above, found by a search.
  await page.click('#tabs button[data-tab="audit"]');
  await page.waitForSelector("#audit-table tbody tr[data-audit]");
  await page.fill("#audit-search", "set_profile_access");
  await page.click("#audit-find");
  await page.waitForFunction(() => {
    const rows = document.querySelectorAll("#audit-table tbody tr[data-audit]");
    return rows.length === 1 && rows[0].textContent.includes("\"enabled\":false")
      && rows[0].textContent.includes("admin-api:console");
  });
  await shot(page, "audit");

  // English labels, kept across reloads of the page.
  await page.selectOption("#lang", "en");
  await page.waitForFunction(() =>
    document.getElementById("title").textContent === "ENT chat — administration console");
  expect(await page.locator('#tabs button[data-tab="users"]').textContent() === "Users",
         "tabs in English");
  await page.click('#tabs button[data-tab="structures"]');
  expect((await page.locator(`${section} h2`).textContent()).includes("1 online"),
         "the online count in English");
  await shot(page, "structures-en");
  expect(violations.length === 0, "no console errors (CSP included): " + violations.join("; "));
  console.log("console: wrong token refused, online count shown, student access turned off, " +
              "rule changed, users filtered and searched, classes, groups, audit searched, English");
} finally {
  await browser.close();
}
