// Drives the ENT page of deploy/ent-embed in Debian's headless Chromium: the floating chat
// window (Converse.js) signs in with the ENT's token, shows a contact in its category,
// accepts a pending request, receives a message sent over TCP, joins a conversation it is
// invited to, comes back signed in after a reload, finds a person through the directory
// search and asks them to be a contact, says so when the chat access is closed and stops
// trying, and comes back into its conversation once the access is open again and the page
// reloaded.
//
// Usage: node ent-window.mjs ENT_URL USER USER_NAME CONTACT CATEGORY REQUESTER SEARCHED
//        SCREENSHOT_DIR TRANSPORT
// (TRANSPORT: websocket, or bosh for a page that leaves WebSocket out)
// It prints `STEP <name>` lines; at each `STEP waiting-…` it reads a line from stdin (the
// test sends the message, the invitation, changes the access meanwhile).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [base, user, userName, contact, category, requester, searched, shots, transport] =
    process.argv.slice(2);
const suffix = transport === "bosh" ? "-bosh" : "";
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = (name) => console.log(`STEP ${name}`);
const proceed = async () => {
    const next = await lines.next();
    if (next.done) throw new Error("the test stopped talking");
};

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, locale: "fr-FR" });
const log = [];
page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
// Converse asks before joining a conversation one is invited to.
page.on("dialog", (dialog) => dialog.accept());

async function fail(error) {
    await page.screenshot({ path: `${shots}/failure${suffix}.png` }).catch(() => {});
    console.error(String(error));
    console.error(log.slice(-40).join("\n"));
    await browser.close();
    process.exit(1);
}

async function signedIn() {
    // The roster shows the contact in its category (a roster group) once signed in.
    const group = page.locator(".roster-group", { hasText: category });
    await group.waitFor({ timeout: 20000 });
    await group.locator(".list-item", { hasText: contact }).first().waitFor({ timeout: 20000 });
}

try {
    await page.goto(`${base}/login?user=${user}&name=${encodeURIComponent(userName)}`);
    if (transport === "bosh") {
        await page.goto(`${base}/?transport=bosh`);
    }
    if (transport === "bosh") {
        // The window talks over BOSH.
        await page.waitForRequest((r) => r.url().endsWith("/http-bind"), { timeout: 20000 });
    }
    await signedIn();
    // The user's own name, as the ENT gave it, not the address.
    await page.locator(".userinfo .username", { hasText: userName }).first().waitFor({ timeout: 20000 });
    step("roster");

    // The pending request, accepted from the window.
    const request = page.locator(".roster-group .list-item", { hasText: requester }).first();
    await request.waitFor({ timeout: 20000 });
    // Accept is in the request's menu, shown on hover.
    await request.hover();
    await request.locator(".dropdown-toggle").first().click();
    await request.locator(".accept-xmpp-request").click();
    // Converse may ask how to file the new contact: keep its suggestion.
    const modal = page.locator(".modal.show form");
    if (await modal.waitFor({ timeout: 3000 }).then(() => true, () => false)) {
        await modal.locator("[type=submit]").click();
    }
    await page
        .locator(".roster-group .list-item.current-xmpp-contact", { hasText: requester })
        .first()
        .waitFor({ timeout: 20000 });
    step("accepted");

    step("waiting-message");
    await proceed();
    // The chat opens by itself, the message in it.
    await page.locator(".chat-msg__text", { hasText: "Bonjour Léa" }).first().waitFor({ timeout: 20000 });
    step("message");

    step("waiting-invitation");
    await proceed();
    await page.locator(".chat-msg__text", { hasText: "Rendez-vous devant le musée" }).first()
        .waitFor({ timeout: 20000 });
    step("conversation");
    await page.screenshot({ path: `${shots}/ent-window${suffix}.png` });

    await page.reload();
    if (transport === "bosh") {
        await page.waitForRequest((r) => r.url().endsWith("/http-bind"), { timeout: 20000 });
    }
    await signedIn();
    // Signed in again (over BOSH, the same session goes on): a new message arrives.
    step("waiting-after-reload");
    await proceed();
    await page.locator(".chat-msg__text", { hasText: "Tu es toujours là" }).first().waitFor({ timeout: 20000 });
    step("reloaded");
    await page.screenshot({ path: `${shots}/ent-window${suffix}-reloaded.png` });

    // Finding a person by name (the server's directory search) and asking them.
    await page.locator(".dropdown--contacts .dropdown-toggle").first().click();
    await page.locator(".add-contact").first().click();
    const box = page.locator("converse-add-contact-modal");
    const field = box.locator('input[name="jid"]');
    await field.waitFor({ timeout: 20000 });
    const term = searched.split(" ").find((word) => word.length > 3);
    await field.pressSequentially(term, { delay: 50 });
    const suggestion = box.locator(".suggestion-box li", { hasText: searched }).first();
    await suggestion.waitFor({ timeout: 20000 });
    await page.screenshot({ path: `${shots}/ent-window${suffix}-search.png` });
    await suggestion.click();
    await box.locator('button[type="submit"]').click();
    // The new contact is listed under the name the directory gave.
    await page.locator(".roster-group .list-item", { hasText: searched }).first().waitFor({ timeout: 20000 });
    step("requested");

    // The pupils' chat access is closed: the window says what the server says, and stops
    // trying (no new sign-in for several seconds).
    step("waiting-access-closed");
    await proceed();
    const notice = page.locator("#chat-notice", { hasText: "pas ouvert à votre profil" });
    await notice.waitFor({ timeout: 20000 });
    let attempts = 0;
    page.on("request", (r) => {
        if (r.url().includes("/api/chat-credentials")) attempts += 1;
    });
    page.on("websocket", () => { attempts += 1; });
    await page.waitForTimeout(8000);
    if (attempts > 0) throw new Error(`the window tried again ${attempts} times`);
    step("refused");
    await page.screenshot({ path: `${shots}/ent-window${suffix}-refused.png` });

    // The access is open again: a reload signs in, and the conversation goes on.
    step("waiting-access-open");
    await proceed();
    await page.reload();
    await signedIn();
    step("waiting-rejoin");
    await proceed();
    await page.locator(".chat-msg__text", { hasText: "On part à 8 h 45" }).first().waitFor({ timeout: 20000 });
    step("rejoined");
    await page.screenshot({ path: `${shots}/ent-window${suffix}-rejoined.png` });
    await browser.close();
    step("done");
    process.exit(0);
} catch (error) {
    await fail(error);
}
