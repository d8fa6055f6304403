import { ConfigError, loadConfig } from "./config/load.js";
import type { Config } from "./config/types.js";
import { Gateway } from "./gateway.js";
import { loadCertificate } from "./http/tls.js";
import { createLogger, type Logger } from "./log.js";
import { NativeUwsUnavailable } from "./uws.js";
import { superviseWorkers, WORKER_ENV } from "./workers.js";

/** Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration. */
export async function main(argv: string[]): Promise<void> {
  let config: Config;
  try {
    const loaded = loadConfig(argv, process.env);
    if ("help" in loaded) {
      process.stdout.write(loaded.help);
      return;
    }
    config = loaded.config;
    // Checked here too so that a bad certificate exits 2 before workers are forked.
    if (config.tls) loadCertificate(config.tls);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`natsedge: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }

  const log = createLogger(config.logLevel);
  if (config.workers > 1) {
    superviseWorkers(argv, config, log);
    return;
  }
  warnAboutDefaults(config, log);
  const worker = process.env[WORKER_ENV];
  let running: Gateway | undefined = undefined;
  // Without TLS there is nothing to reload and SIGHUP keeps its default (the process ends). With
  // it, the handler goes in before start-up, so that a SIGHUP sent early does not end the process.
  if (config.tls) process.on("SIGHUP", () => running?.reloadTls("SIGHUP"));
  let gateway: Gateway;
  try {
    ({ gateway } = await Gateway.start(config, log.child(worker === undefined ? {} : { worker }), {
      sharePort: worker !== undefined,
    }));
  } catch (err) {
    if (err instanceof ConfigError) {
      // The certificate files changed for the worse since the check above.
      process.stderr.write(`natsedge: ${err.message}\n`);
      process.exit(2);
    }
    if (err instanceof NativeUwsUnavailable) log.fatal(err.message);
    else log.fatal({ err }, "start-up failed");
    process.exit(1);
  }
  running = gateway;

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, "second signal: exiting without finishing the drain");
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, "shutting down");
    gateway.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

function warnAboutDefaults(config: Config, log: Logger): void {
  if (config.embedded) {
    log.warn(
      "no configuration: embedded default with an in-memory broker, namespace 'public' open to anonymous clients, auth off, any origin allowed",
    );
  }
  if (!config.apiKey) log.warn("apiKey not set: the HTTP server API answers 401 to every request");
  if (config.nats && !config.sessionSecret) {
    log.warn("sessionSecret not set: long-poll/SSE sessions only work on the replica that issued them");
  }
}
