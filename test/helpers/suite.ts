import { afterAll, afterEach, beforeAll, expect } from "vitest";
import { TestClient, type Format, type Frame } from "./client.js";
import { startGateway, type GatewayProcess, type StartOptions } from "./gateway.js";

export interface SharedGateway {
  /** The file's gateway; only available once its beforeAll hook has run. */
  readonly gw: GatewayProcess;
  /** Terminates `c` after the current test. */
  readonly track: <T extends TestClient>(c: T) => T;
  /** Connects a client without a token, terminated after the current test. */
  readonly connect: (format: Format) => Promise<TestClient>;
}

/**
 * One gateway for the whole test file: started before the first test, stopped after the last.
 * Call at the top level of a test file.
 */
export function useGateway(opts: StartOptions): SharedGateway {
  let gw: GatewayProcess | undefined;
  beforeAll(async () => {
    gw = await startGateway(opts);
  });
  afterAll(async () => {
    await gw?.stop();
  });

  const open: TestClient[] = [];
  afterEach(() => {
    for (const c of open.splice(0)) c.terminate();
  });

  const shared: SharedGateway = {
    get gw(): GatewayProcess {
      if (gw === undefined) throw new Error("the gateway is not started yet");
      return gw;
    },
    track: (c) => {
      open.push(c);
      return c;
    },
    connect: async (format) => shared.track(await TestClient.connect(shared.gw.wsUrl, undefined, { format })),
  };
  return shared;
}

/** The `ok` body of a reply, failing the test (with the reply) if it is an error. */
export function ok(reply: Frame): Frame {
  expect(reply.error, JSON.stringify(reply)).toBeUndefined();
  return reply.ok as Frame;
}
