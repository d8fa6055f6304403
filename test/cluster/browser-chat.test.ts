/**
 * The chat demo (/demo, built on the client SDK served at /natsedge-client.js) in real Chromium
 * (playwright-core), against two gateway replicas over one nats-server:
 *  - two pages on two replicas chat and see each other in presence (docs/chat.png is taken after
 *    the next test, with UPDATE_SCREENSHOTS=1 or when missing);
 *  - a page whose WebSocket is blocked falls back to long-poll and still chats, as does one
 *    with `?transports=longpoll`;
 *  - the replica a page is on is killed (-9) while a backend publishes a numbered stream; the
 *    page, given both replicas with `?urls=`, shows every publication once, in order.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { freePort, startNats, type NatsCluster } from "../helpers/nats.js";
import { gatewayYaml, sequenceProblem, SequencePublisher, sign, waitUntil, within } from "./util.js";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs/chat.png");

describe("the chat demo in Chromium, on two replicas", () => {
  let nats: NatsCluster | undefined;
  let a: GatewayProcess;
  let b: GatewayProcess;
  let browser: Browser | undefined;
  let publisher: SequencePublisher | undefined;
  const errors: string[] = [];

  beforeAll(async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} is needed (apt-get install -y chromium)`).toBe(true);
    nats = await startNats(1);
    // Fixed ports, so that each replica can allow both pages' origins (a page served by A
    // connects to B after A dies).
    const ports = [await freePort(), await freePort()];
    const yaml = gatewayYaml({
      extra: [
        "demo: true",
        'sessionSecret: "browser-chat-session-secret-0123456789abcdef"',
        `allowedOrigins: [${ports.map((p) => `"http://127.0.0.1:${p}"`).join(", ")}]`,
      ].join("\n"),
    });
    const gws: GatewayProcess[] = [];
    for (const port of ports) {
      gws.push(await startGateway({ config: { yaml }, args: ["--nats", nats.servers, "--port", String(port)], readyTimeoutMs: 40_000 }));
    }
    [a, b] = gws as [GatewayProcess, GatewayProcess];
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await publisher?.close();
    await Promise.all([a?.stop("SIGKILL"), b?.stop("SIGKILL")]);
    await nats?.stop();
  });

  /** Opens the demo; `block` replaces the page's WebSocket with one that never connects. */
  async function openPage(gw: GatewayProcess, query: Record<string, string>, block = false): Promise<Page> {
    const page = await (browser as Browser).newPage({ viewport: { width: 960, height: 540 } });
    page.on("pageerror", (err) => errors.push(`${query.name}: ${err.message}`));
    if (block) {
      await page.addInitScript(`(() => {
        window.WebSocket = class BlockedWebSocket {
          constructor(url) {
            this.url = url;
            this.readyState = 0;
            setTimeout(() => {
              this.readyState = 3;
              if (this.onerror) this.onerror({ type: "error" });
              if (this.onclose) this.onclose({ code: 1006, reason: "" });
            }, 10);
          }
          send() { throw new Error("not open"); }
          close() {}
        };
      })()`);
    }
    await page.goto(`${gw.url}/demo?${new URLSearchParams({ ns: "chat", ...query })}`);
    return page;
  }
  const text = (page: Page, id: string): Promise<string | null> => page.textContent(`#${id}`);
  const waitFor = (page: Page, expr: string, what: string, timeout = 15_000): Promise<unknown> =>
    page.waitForFunction(expr, undefined, { timeout }).catch((err: Error) => {
      throw new Error(`${what}: ${err.message}`);
    });
  const online = (page: Page, n: number): Promise<unknown> =>
    waitFor(page, `document.getElementById("online").dataset.count === "${n}"`, `${n} online`, 20_000);
  const transport = (page: Page, t: string): Promise<unknown> =>
    waitFor(page, `document.getElementById("transport").textContent === "${t}"`, `transport ${t}`);
  const texts = (page: Page, selector: string): Promise<string[]> =>
    page.evaluate(`[...document.querySelectorAll(${JSON.stringify(selector)})].map((e) => e.textContent)`) as Promise<string[]>;
  const lines = (page: Page): Promise<string[]> => texts(page, "#messages li");
  const people = (page: Page): Promise<string[]> => texts(page, "#online li");
  async function say(page: Page, message: string): Promise<void> {
    await page.fill("#text", message);
    await page.click("button[type=submit]");
  }
  const sees = (page: Page, message: string): Promise<unknown> =>
    waitFor(page, `[...document.querySelectorAll("#messages li .text")].some((e) => e.textContent === ${JSON.stringify(message)})`, `"${message}"`);

  let alice: Page;
  let bob: Page;

  it("two pages on two replicas chat and see each other in presence", async () => {
    const room = "lobby";
    alice = await openPage(a, { room, name: "Alice", token: await sign("alice", { name: "Alice" }) });
    bob = await openPage(b, { room, name: "Bob", token: await sign("bob", { name: "Bob" }) });
    await Promise.all([transport(alice, "websocket"), transport(bob, "websocket")]);
    await Promise.all([online(alice, 2), online(bob, 2)]);
    expect((await people(alice)).sort()).toEqual(["Alice (you)", "Bob"]);
    expect((await people(bob)).sort()).toEqual(["Alice", "Bob (you)"]);
    await say(alice, "Hi Bob, I am on replica A");
    await sees(bob, "Hi Bob, I am on replica A");
    await say(bob, "Hi Alice! Replica B here");
    // Bob's page shows his message when it comes back from the channel, on its own path (B's
    // fan-out), which need not be quicker than the one to Alice through NATS and replica A.
    await Promise.all([sees(alice, "Hi Alice! Replica B here"), sees(bob, "Hi Alice! Replica B here")]);
    expect(await lines(alice)).toEqual(["AliceHi Bob, I am on replica A", "BobHi Alice! Replica B here"]);
    expect(await lines(bob)).toEqual(await lines(alice));
    expect(await text(alice, "state")).toBe("connected");
  });

  it("a page whose WebSocket is blocked falls back to long-poll and still chats", async () => {
    const room = "lobby";
    const carol = await openPage(b, { room, name: "Carol", token: await sign("carol", { name: "Carol" }) }, true);
    const dave = await openPage(a, { room, name: "Dave", token: await sign("dave", { name: "Dave" }), transports: "longpoll" });
    await Promise.all([transport(carol, "longpoll"), transport(dave, "longpoll")]);
    // The WebSocket pages hear of the long-poll clients (join pushes), and they see everyone.
    await Promise.all([online(alice, 4), online(carol, 4), online(dave, 4)]);
    await say(carol, "Carol here, on long-poll");
    await Promise.all([sees(alice, "Carol here, on long-poll"), sees(bob, "Carol here, on long-poll"), sees(dave, "Carol here, on long-poll")]);
    await say(alice, "Welcome Carol and Dave");
    await Promise.all([sees(carol, "Welcome Carol and Dave"), sees(dave, "Welcome Carol and Dave")]);
    await say(dave, "Long-poll works from replica A too");
    await Promise.all([sees(alice, "Long-poll works from replica A too"), sees(carol, "Long-poll works from replica A too")]);
    expect(await lines(carol)).toEqual(["CarolCarol here, on long-poll", "AliceWelcome Carol and Dave", "DaveLong-poll works from replica A too"]);
    expect(await text(carol, "transport")).toBe("longpoll");
    // docs/chat.png is (re)written when missing or with UPDATE_SCREENSHOTS=1, so that test runs
    // do not churn a tracked binary.
    const png = await alice.screenshot(!existsSync(SCREENSHOT) || process.env.UPDATE_SCREENSHOTS === "1" ? { path: SCREENSHOT } : {});
    expect(png.subarray(1, 4).toString()).toBe("PNG");
    await Promise.all([carol.close(), dave.close()]);
  });

  it("a page on a replica that is killed shows every message published meanwhile, once, in order", async () => {
    const COUNT = 600;
    const RATE = 200;
    const room = "feed";
    // Served by A, connected to A first, told about B with ?urls=.
    const page = await openPage(a, { room, name: "Erin", urls: `${a.url},${b.url}` });
    await transport(page, "websocket");
    await waitFor(page, `window.natsedge.sub.active === true`, "subscribed");
    publisher = new SequencePublisher(nats!.nodes[0]!.url, `natsedge.ch.chat.${room}`, randomUUID());
    await publisher.open();
    const run = publisher.run(COUNT, RATE);
    await waitFor(page, `document.querySelectorAll("#messages li .text").length >= 150`, "150 shown before the kill");
    await page.evaluate(`window.drops = 0; window.natsedge.client.on("disconnected", () => window.drops++)`);
    await a.stop("SIGKILL");
    await waitFor(page, `window.drops === 1`, "the page noticing the kill");
    await within(run, 30_000, "the publisher");
    await waitFor(page, `document.querySelectorAll("#messages li .text").length >= ${COUNT}`, "every message shown", 30_000);
    await waitUntil(async () => ((await text(page, "state")) === "connected" ? true : undefined), "connected again");
    const shown = await lines(page);
    const ns = shown.map((l) => (l.startsWith("backend{") ? (JSON.parse(l.slice("backend".length)) as { n: number }).n : -1));
    expect(sequenceProblem(ns, COUNT)).toBeUndefined();
    expect(await text(page, "transport")).toBe("websocket");
    await page.close();
  });

  afterAll(() => {
    expect(errors).toEqual([]);
  });
});
