// Headless Chromium (Debian's, at /usr/bin/chromium or $CHROMIUM) drives the bot's web pages as a
// person would: signs in with an API token, reads the services × environments matrix, follows a
// promotion, sees its approvals arrive live without a reload, and reads the DORA charts.
// Screenshots go to target/screenshots/; with UPDATE_DOCS=1 the README's two (the first screen
// of /ui and /ui/dora) go to docs/.
//
// The bot is the debug build (target/debug/shipmate, or $SHIPMATE_BIN) on a fresh temp directory,
// SQLite database and loopback port; ci/browser.sh builds it and runs `node --test` here.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.env.SHIPMATE_BIN ?? join(root, "target/debug/shipmate");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = join(root, "target/screenshots");
const CI_TOKEN = "ci-" + randomBytes(16).toString("hex");
const LEAD_TOKEN = "lead-" + randomBytes(16).toString("hex");
const LEAD2_TOKEN = "lead2-" + randomBytes(16).toString("hex");
const sha = (text) => createHash("sha256").update(text).digest("hex");

let dir, bot, base, context, profile;

async function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

async function api(method, path, token, body) {
  const response = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  return { status: response.status, json };
}

/** Polls `check` every 50 ms until it answers truthy, failing after `ms`. */
async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function promote(version, environment) {
  const { status, json } = await api("POST", "/api/v1/promotions", CI_TOKEN, {
    service: "api",
    version,
    environment,
  });
  assert.equal(status, 202, JSON.stringify(json));
  return json.id;
}

async function state(id) {
  return (await api("GET", `/api/v1/promotions/${id}`, CI_TOKEN)).json.state;
}

before(async () => {
  assert.ok(existsSync(bin), `no bot binary at ${bin}; run cargo build --bin shipmate first`);
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}; apt-get install chromium`);
  dir = mkdtempSync(join(tmpdir(), "shipmate-browser-"));
  profile = mkdtempSync(join(tmpdir(), "shipmate-chromium-"));
  mkdirSync(shots, { recursive: true });
  const script = join(dir, "deploy.sh");
  writeFileSync(script, '#!/bin/sh\necho "deploying $SHIPMATE_SERVICE $SHIPMATE_VERSION to $SHIPMATE_ENVIRONMENT"\necho "done"\n');
  chmodSync(script, 0o755);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = (name, approvals = "") =>
    `  [[service.environment]]\n  name = "${name}"\n  backend = { kind = "command", run = ["./deploy.sh"] }\n${approvals}`;
  writeFileSync(
    join(dir, "bot.toml"),
    `[server]\nlisten = "127.0.0.1:${port}"\n\n[database]\nurl = "sqlite://bot.db"\n\n` +
      `[roles]\nleads = ["api:lead", "api:lead2"]\ndeployers = ["api:ci", "api:lead", "api:lead2"]\nadmins = []\n\n` +
      `[[api_tokens]]\nname = "ci"\nsha256 = "${sha(CI_TOKEN)}"\n\n` +
      `[[api_tokens]]\nname = "lead"\nsha256 = "${sha(LEAD_TOKEN)}"\n\n` +
      `[[api_tokens]]\nname = "lead2"\nsha256 = "${sha(LEAD2_TOKEN)}"\n\n` +
      `[[service]]\nname = "api"\n${env("dev")}${env("staging")}` +
      env("production", '  approvals = { required = 2, from = "leads" }\n') +
      `\n[[service]]\nname = "web"\n${env("staging")}${env("production")}`,
  );
  bot = spawn(bin, ["serve", "--config", join(dir, "bot.toml")], { cwd: dir, stdio: ["ignore", "ignore", "inherit"] });
  await until("the bot to be ready", async () => {
    try {
      return (await fetch(base + "/readyz")).ok;
    } catch {
      return false;
    }
  });
  // A fresh profile directory (Playwright passes it as --user-data-dir).
  context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1024, height: 700 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await context?.close();
  if (bot && bot.exitCode === null) {
    const exited = new Promise((done) => bot.once("exit", done));
    bot.kill("SIGTERM");
    await exited;
  }
  for (const path of [dir, profile]) if (path) rmSync(path, { recursive: true, force: true });
});

test("sign in, read the matrix, follow a promotion live, read the DORA charts", async () => {
  // A history: 1.0.0 through dev and staging (and web's staging), then waiting in production.
  for (const environment of ["dev", "staging"]) {
    const id = await promote("1.0.0", environment);
    await until(`#${id} to succeed`, async () => (await state(id)) === "succeeded");
  }
  const prod = await promote("1.0.0", "production");
  assert.equal(await state(prod), "awaiting_approval");

  const page = await context.newPage();

  // Signing in: the matrix sends us to the form and the form back to the matrix.
  await page.goto(base + "/ui");
  assert.match(page.url(), /\/ui\/login\?next=%2Fui$/);
  await page.getByLabel("API token").fill(LEAD_TOKEN);
  await page.screenshot({ path: join(shots, "login.png") });
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(base + "/ui", { timeout: 5000 }).catch(async (e) => {
    await page.screenshot({ path: join(shots, "debug.png") });
    console.log(page.url(), await page.content());
    throw e;
  });
  assert.match(await page.textContent("header.top"), /signed in as api:lead/);

  // The matrix: api runs 1.0.0 in dev and staging, production waits for approval.
  const row = page.locator("tr", { has: page.locator('th[scope="row"]', { hasText: /^api$/ }) }).first();
  assert.match(await row.innerText(), /1\.0\.0[\s\S]*1\.0\.0[\s\S]*nothing deployed[\s\S]*awaiting approval/);
  await page.screenshot({ path: join(shots, "ui.png"), fullPage: true });
  if (process.env.UPDATE_DOCS === "1") await page.screenshot({ path: join(root, "docs/ui.png") });

  // Following the promotion; its approvals arrive while the page stays loaded.
  await page.getByRole("link", { name: `#${prod} api 1.0.0 → production` }).first().click();
  await page.waitForURL(`${base}/ui/promotions/${prod}`);
  assert.match(await page.textContent("#live"), /0 of 2 needed/);
  await page.evaluate(() => {
    window.notReloaded = true;
  });
  assert.equal((await api("POST", `/api/v1/promotions/${prod}/approve`, LEAD_TOKEN, {})).status, 200);
  await page.waitForFunction(() => document.getElementById("live").textContent.includes("1 of 2 needed"), null, { timeout: 10000 });
  assert.equal((await api("POST", `/api/v1/promotions/${prod}/approve`, LEAD2_TOKEN, {})).status, 200);
  await page.waitForFunction(() => document.querySelector("#live .state")?.textContent === "succeeded", null, { timeout: 20000 });
  assert.equal(await page.evaluate(() => window.notReloaded), true, "the state changed without a reload");
  assert.match(await page.textContent("#live pre.log"), /deploying api 1\.0\.0 to production/);
  await page.screenshot({ path: join(shots, "promotion.png"), fullPage: true });

  // The DORA page: one chart per metric for each service, with bars for the deploys made.
  await page.getByRole("link", { name: "Delivery metrics" }).click();
  await page.waitForURL(base + "/ui/dora");
  assert.equal(await page.locator("figure svg").count(), 8, "4 charts × 2 services");
  const frequency = page.locator("figure", { hasText: "api: deploys per day" });
  const bars = await frequency.locator("rect[height]:not([height='0'])").count();
  assert.ok(bars >= 3 + 3, `bars for the deploys and the legend: ${bars}`);
  assert.match(await frequency.locator("svg title").first().textContent(), /deploys per day/);
  await page.screenshot({ path: join(shots, "dora.png"), fullPage: true });
  if (process.env.UPDATE_DOCS === "1") await page.screenshot({ path: join(root, "docs/dora.png") });

  // On a phone the pages fit the screen's width; wide tables scroll inside their box.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const path of ["/ui", `/ui/promotions/${prod}`, "/ui/audit", "/ui/dora"]) {
    await page.goto(base + path);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${path} is ${overflow}px wider than a phone`);
  }
  await page.goto(base + "/ui");
  await page.screenshot({ path: join(shots, "ui-phone.png"), fullPage: true });
});
