import { version } from "./version.js";
import { ConfigError, FORMATS, formatConfig, loadConfig, type Format } from "./config/load.js";
import type { Config } from "./config/types.js";
import { Gateway } from "./gateway.js";
import { loadCertificate } from "./http/tls.js";
import { createLogger, type Logger } from "./log.js";
import { NativeUwsUnavailable } from "./uws.js";
import { superviseWorkers, WORKER_ENV } from "./workers.js";

const CHECK_CONFIG = "check-config";

function exitBadConfig(err: ConfigError): never {
  process.stderr.write(`natsedge: ${err.message}\n`);
  process.exit(2);
}

/** The configuration start-up runs with, or undefined once --help has been printed. */
function configOrExit(argv: string[]): Config | undefined {
  try {
    const loaded = loadConfig(argv, process.env);
    if ("help" in loaded) {
      process.stdout.write(loaded.help);
      return undefined;
    }
    // Checked here too so that a bad certificate exits 2 before workers are forked, and so that
    // check-config finds it.
    if (loaded.config.tls) loadCertificate(loaded.config.tls);
    return loaded.config;
  } catch (err) {
    if (err instanceof ConfigError) exitBadConfig(err);
    throw err;
  }
}

/** `check-config [<file>] [--format json|yaml] [settings...]`: the rest is read as start-up reads it. */
function checkConfig(args: string[]): void {
  // Help first, as for start-up: `--format --help` must not read --help as the format.
  if (args.includes("--help") || args.includes("-h")) {
    configOrExit(args);
    return;
  }
  const rest = [...args];
  const file = rest[0] !== undefined && !rest[0].startsWith("-") ? rest.shift() : undefined;
  let format: Format = "json";
  const settings: string[] = [];
  for (let arg = rest.shift(); arg !== undefined; arg = rest.shift()) {
    if (arg !== "--format" && !arg.startsWith("--format=")) {
      settings.push(arg);
      continue;
    }
    const value = arg === "--format" ? rest.shift() : arg.slice("--format=".length);
    const known = FORMATS.find((name) => name === value);
    if (known === undefined) exitBadConfig(new ConfigError(`--format: ${JSON.stringify(value ?? "")} is not allowed: one of ${FORMATS.join(", ")}`));
    format = known;
  }
  const config = configOrExit([...(file === undefined ? [] : ["--config", file]), ...settings]);
  if (config) process.stdout.write(formatConfig(config, format));
}

/** Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration. */
export async function main(argv: string[]): Promise<void> {
  // Like --help, anywhere: it must work whatever else is wrong with the command line.
  if (argv.includes("--version")) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  if (argv[0] === CHECK_CONFIG) {
    checkConfig(argv.slice(1));
    return;
  }
  const config = configOrExit(argv);
  if (config === undefined) return;

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
