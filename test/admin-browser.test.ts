/**
 * The admin console in a real browser (Chromium via playwright-core): log in, watch the charts
 * move while messages flow, publish from the page to a WebSocket client, disconnect a user.
 * With ADMIN_SCREENSHOTS=1 it also writes the screenshots in docs/admin/.
 */
import { mkdirSync } from "node:fs";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "./helpers/browser.js";
import { TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { eventually } from "./helpers/signal.js";
import { signToken } from "./helpers/tokens.js";

const ADMIN_SECRET = "admin-browser-console-secret-0123456789ab";
const HMAC = "admin-browser-hmac-secret-0123456789abcdef";
const CONFIG = `
adminSecret: ${ADMIN_SECRET}
auth:
  hmacSecret: "${HMAC}"
namespaces:
  room: { history: { size: 20, ttl: 5m }, presence: true, clientPublish: true }
`;
const SHOTS = process.env.ADMIN_SCREENSHOTS === "1" ? new URL("../docs/admin/", import.meta.url) : undefined;

async function shot(page: Page, name: string): Promise<void> {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: new URL(`${name}.png`, SHOTS).pathname, fullPage: true });
}

/** Text of the first element matching `selector` once `accept` takes it. */
function waitText<T>(page: Page, selector: string, accept: (text: string) => T | undefined, what: string): Promise<T> {
  return eventually(async () => {
    const text = await page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => null);
    return text === null ? undefined : accept(text);
  }, what, 15_000, 100);
}

describe("admin console in Chromium", () => {
  let gw: GatewayProcess;
  let browser: Browser;
  beforeAll(async () => {
    gw = await startGateway({ config: { yaml: CONFIG } });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await gw?.stop();
  });

  it("logs in, charts live traffic, publishes to a client and disconnects a user", { timeout: 90_000 }, async () => {
    const alice = await TestClient.connect(gw.wsUrl, await signToken({ sub: "alice" }, HMAC));
    const bob = await TestClient.connect(gw.wsUrl, await signToken({ sub: "bob" }, HMAC));
    expect((await alice.request("subscribe", { ch: "room.lobby" })).ok).toBeDefined();
    // Traffic while the overview is watched: bob publishes every 50 ms, at most for 60 s.
    let sent = 0;
    const traffic = setInterval(() => {
      if (++sent > 1200) clearInterval(traffic);
      else bob.send({ id: 1000 + sent, op: "publish", ch: "room.lobby", data: { n: sent } });
    }, 50);
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    try {
      await page.goto(`${gw.adminUrl}/admin`);
      await page.fill("input[name=secret]", "not-the-admin-secret");
      await page.click("#login button");
      await waitText(page, "#login-error", (t) => (t.includes("wrong admin secret") ? t : undefined), "the refusal shown");
      await page.fill("input[name=secret]", ADMIN_SECRET);
      await page.click("#login button");
      await page.waitForSelector("#app:not([hidden])");

      // The charts gain a point a second; the rates shown become positive.
      const chart = page.locator("svg.chart").first();
      const points = async (): Promise<number> => Number(await chart.getAttribute("data-points"));
      const before = await points();
      await eventually(async () => ((await points()) >= before + 3 ? true : undefined), "three more chart points", 15_000, 100);
      await waitText(page, "#rate-out", (t) => (Number(t.replace(/,/g, "")) > 0 ? t : undefined), "a positive outgoing rate");
      await waitText(page, "#rate-in", (t) => (Number(t.replace(/,/g, "")) > 0 ? t : undefined), "a positive incoming rate");
      await waitText(page, "#connections", (t) => (t === "2" ? t : undefined), "two connections");
      // A screenshot with some history in the charts.
      if (SHOTS) await eventually(async () => ((await points()) >= before + 20 ? true : undefined), "20 chart points", 40_000, 200);
      await shot(page, "overview");

      await page.goto(`${gw.adminUrl}/admin#/channels`);
      await waitText(page, "main table", (t) => (t.includes("room.lobby") ? t : undefined), "room.lobby listed");
      await shot(page, "channels");

      await page.goto(`${gw.adminUrl}/admin#/channel/room.lobby`);
      await waitText(page, "#tail", (t) => (t.includes('"n"') ? t : undefined), "the live tail");
      await page.fill("textarea", '{"from": "admin console"}');
      await page.click("#publish button[type=submit]");
      const pub = await alice.nextPush((p) => p.push === "pub" && (p.data as { from?: string }).from === "admin console", "the console's publication");
      expect(pub).toMatchObject({ ch: "room.lobby", data: { from: "admin console" } });
      await waitText(page, "#tail", (t) => (t.includes("admin console") ? t : undefined), "the console's publication in the tail");
      await shot(page, "channel");
      clearInterval(traffic);

      await page.goto(`${gw.adminUrl}/admin#/user/alice`);
      await waitText(page, "#user-connections", (t) => (t === "1 connections" ? t : undefined), "alice's connection listed");
      await shot(page, "user");
      await page.click("button.danger");
      expect((await alice.closed).code).toBe(4003);

      await page.goto(`${gw.adminUrl}/admin#/config`);
      await waitText(page, "pre", (t) => (t.includes('"adminSecret": "[redacted]"') ? t : undefined), "the redacted configuration");
      expect(await page.locator("pre").textContent()).not.toContain(ADMIN_SECRET);
      await shot(page, "config");
    } finally {
      clearInterval(traffic);
      await page.close();
      alice.terminate();
      bob.terminate();
    }
  });
});
