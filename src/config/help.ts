/**
 * Layout of the `--help` text. The settings themselves come from the table in settings.ts, so the
 * help cannot drift from what the loader accepts.
 */

export interface HelpEntry {
  /** File key, e.g. `auth.hmacSecret`. */
  key: string;
  /** Env var names, the preferred one first (a setting may have a short alias). */
  envs: readonly string[];
  /** Flag names, as envs; empty for settings that only make sense in a file or env var (namespaces). */
  flags: readonly string[];
  about: string;
  allowed: string;
  default: string;
}

const WIDTH = 80;
/** Where the generated list of secrets goes in PREAMBLE. */
const SECRETS = "<secrets>";
const INDENT = "      ";

const PREAMBLE = `Usage: natsedge [--config <file>] [--<setting> <value> | --<setting>=<value>]...
       natsedge check-config [<file>] [--format json|yaml] [--<setting> <value>]...
       natsedge --version

natsedge is a realtime WebSocket gateway. Settings are read from, lowest precedence first:
built-in defaults, a config file, NATSEDGE_* environment variables, command-line flags.
Flags are given as --name value or --name=value. Unknown flags, config-file keys and
NATSEDGE_* variables are errors, as are empty values.

check-config loads the configuration as start-up does (the file, NATSEDGE_* variables and
flags), prints the result with secrets redacted and exits 0, or prints the error start-up
would and exits 2. Durations in it are milliseconds, sizes bytes.

Durations: 500ms, 30s, 5m, 1h, 2d, or a plain integer of seconds.
Sizes: 64KiB, 1MiB, 1GiB (1024-based), 512KB, 1MB, 1GB (1000-based), 100B, or a plain
integer of bytes.

Auth: set at most one key source (auth.hmacSecret, auth.publicKey, auth.publicKeyFile,
auth.jwksFile or auth.jwksUrl); auth.audience, auth.issuer and auth.cookie need one,
auth.jwksCooldown and auth.jwksMaxAge need auth.jwksUrl.

NATS: without nats.servers, natsedge runs one process with an in-memory broker; the other
nats.* settings then are errors, and so is workers above 1. nats.user and nats.password go
together; nats.token and nats.credsFile each exclude all other NATS credentials.

${SECRETS}

Embedded default: with no config file, no auth key source and no namespaces, natsedge
serves one anonymous namespace, "public" (presence, joinLeave, clientPublish, history of
100 messages for 5m), to any origin. Do not run it like that in production.

Options:
  -h, --help
${INDENT}Print this help and exit.
  --version
${INDENT}Print the version and exit.
  --format json|yaml
${INDENT}check-config only: how to print the configuration. Default: json.
  --config <file>    env NATSEDGE_CONFIG
${INDENT}Config file: .json is read as JSON, .yaml/.yml as YAML, anything else as JSON,
${INDENT}then YAML. Default: none.`;

export function formatHelp(entries: readonly HelpEntry[], secrets: readonly string[]): string {
  const secret = `Secrets: the values of ${secrets.join(", ")} are never printed, not even by check-config.`;
  const sections = entries.map((entry) => {
    const flags = entry.flags.map((flag) => `${flag} <value>`).join(", ");
    const names = [flags, `env ${entry.envs.join(", ")}`, `file ${entry.key}`].filter(Boolean);
    const text = `${entry.about}: ${entry.allowed}. Default: ${entry.default}.`;
    return [...header(names), ...wrap(text)].join("\n");
  });
  const footer = "Full reference with a YAML example: docs/configuration.md";
  return [PREAMBLE.replace(SECRETS, wrap(secret, "").join("\n")), ...sections, "", footer, ""].join("\n");
}

/** The names on one line if they fit; else the flags on the first and the rest below. */
function header(names: readonly string[]): string[] {
  const line = (group: readonly string[], indent: string): string => `${indent}${group.join("    ")}`;
  if (line(names, "  ").length <= WIDTH || names.length < 2) return [line(names, "  ")];
  const [first = "", ...others] = names;
  const rest = line(others, "    ");
  return [line([first], "  "), ...(rest.length <= WIDTH ? [rest] : others.map((name) => line([name], "    ")))];
}

function wrap(text: string, indent = INDENT): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && indent.length + line.length + 1 + word.length > WIDTH) {
      lines.push(indent + line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  return [...lines, indent + line];
}
