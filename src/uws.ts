import { createRequire } from "node:module";
import path from "node:path";
import type * as Uws from "uWebSockets.js";

/**
 * The uWebSockets.js package we install silently swaps in a pure-JS imitation when its native
 * binary does not load (wrong Node ABI, old glibc, UWS_USE_FALLBACK set). That imitation is an
 * order of magnitude slower and behaves differently under backpressure, so running on it would be
 * a quiet production incident. We load the native binary ourselves and insist the package handed
 * us that very object.
 */
const require = createRequire(import.meta.url);

export class NativeUwsUnavailable extends Error {}

let cached: typeof Uws | undefined;

/** Throws NativeUwsUnavailable instead of ever returning the fallback. */
export function loadUws(): typeof Uws {
  if (cached) return cached;
  const pkgDir = path.dirname(require.resolve("uWebSockets.js/package.json"));
  const binary = path.join(
    pkgDir,
    "binaries",
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
  );
  let native: unknown;
  try {
    native = require(binary);
  } catch (err) {
    throw new NativeUwsUnavailable(
      `the native uWebSockets.js binary for ${process.platform}-${process.arch} ABI ${process.versions.modules} ` +
        `does not load (${(err as Error).message.split("\n")[0]}); refusing to run on the slow pure-JS fallback`,
    );
  }
  const loaded = require("uWebSockets.js") as Partial<typeof Uws>;
  if (loaded !== native) {
    throw new NativeUwsUnavailable(
      "uWebSockets.js loaded its pure-JS fallback (is UWS_USE_FALLBACK set?); refusing to run on it",
    );
  }
  // A binary built without TLS would have no SSLApp, and tls.certFile could not be served.
  for (const factory of ["App", "SSLApp"] as const) {
    if (typeof loaded[factory] !== "function") {
      throw new NativeUwsUnavailable(`the native uWebSockets.js binary has no ${factory}; refusing to run without it`);
    }
  }
  cached = loaded as typeof Uws;
  return cached;
}

export type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_listen_socket } from "uWebSockets.js";
