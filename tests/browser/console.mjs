// Drives the admin console (/admin) in Debian's headless Chromium: loads the structures with
// the admin token, turns chat access off for students of one structure and changes a rule.
// Usage: node console.mjs BASE_URL TOKEN STRUCTURE_ID [SCREENSHOT.png]
import { chromium } from "playwright-core";

const [base, token, structure, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(10000);
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
  if (!(await students.isChecked())) throw new Error("student access should start on");
  await students.uncheck();
  await page.waitForFunction(() => {
    const s = document.getElementById("status");
    return s.className === "ok" && s.textContent.includes("accès fermé");
  });

  const rule = page.locator(`${section} select[data-from="student"][data-to="student"]`);
  await rule.selectOption("same_structure");
  await page.waitForFunction(() =>
    document.getElementById("status").textContent.includes("Règle mise à jour"));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log("console: wrong token refused, student access turned off, rule changed");
} finally {
  await browser.close();
}
