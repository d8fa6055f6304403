/**
 * Layout of the `--help` text. The settings themselves come from the table in load.ts, so the
 * help cannot drift from what the loader accepts.
 */

export interface HelpEntry {
  /** File key, e.g. `auth.hmacSecret`. */
  key: string;
  env: string;
  /** Absent for settings that only make sense in a file or env var (namespaces). */
  flag?: string;
  about: string;
  allowed: string;
  default: string;
}

const WIDTH = 80;
const INDENT = "      ";

const PREAMBLE = `Usage: natsedge [--config <file>] [--<setting> <value> | --<setting>=<value>]...

natsedge is a realtime WebSocket gateway. Settings are read from, lowest precedence first:
built-in defaults, a config file, NATSEDGE_* environment variables, command-line flags.
Unknown flags, config-file keys and NATSEDGE_* variables are errors, as are empty values.

Durations: 500ms, 30s, 5m, 1h, 2d, or a plain integer of seconds.
Sizes: 64KiB, 1MiB, 1GiB (1024-based), 512KB, 1MB, 1GB (1000-based), 100B, or a plain
integer of bytes.

Auth: set at most one key source (auth.hmacSecret, auth.publicKey, auth.publicKeyFile or
auth.jwksFile); auth.audience, auth.issuer and auth.cookie need one.

Embedded default: with no config file, no auth key source and no namespaces, natsedge
serves one anonymous namespace, "public" (presence, joinLeave, clientPublish, history of
100 messages for 5m), to any origin. Do not run it like that in production.

Options:
  -h, --help
${INDENT}Print this help and exit.
  --config <file>    env NATSEDGE_CONFIG
${INDENT}Config file: .json is read as JSON, .yaml/.yml as YAML, anything else as JSON,
${INDENT}then YAML. Default: none.`;

export function formatHelp(entries: readonly HelpEntry[]): string {
  const sections = entries.map((entry) => {
    const names = [entry.flag && `${entry.flag} <value>`, `env ${entry.env}`, `file ${entry.key}`];
    const text = `${entry.about}: ${entry.allowed}. Default: ${entry.default}.`;
    return [`  ${names.filter(Boolean).join("    ")}`, ...wrap(text)].join("\n");
  });
  const footer = "Full reference with a YAML example: docs/configuration.md";
  return [PREAMBLE, ...sections, "", footer, ""].join("\n");
}

function wrap(text: string): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && INDENT.length + line.length + 1 + word.length > WIDTH) {
      lines.push(INDENT + line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  return [...lines, INDENT + line];
}
