/**
 * How bad configuration is reported. Every message is built here from the key and where its
 * value came from, so that each names the setting the same way whichever source set it.
 */

/** Bad configuration. The message is one line naming the key, the value and what is allowed. */
export class ConfigError extends Error {
  override name = "ConfigError";

  constructor(message: string) {
    // A key, flag, variable or file name may itself hold a line break: escaped, it stays one line.
    super(message.replace(/[\p{Cc}\u2028\u2029]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
  }
}

/** Where a raw value came from, for error messages and for resolving relative paths. */
export interface Origin {
  label: string;
  /** Set for values from a config file: relative paths in it resolve against this directory. */
  dir?: string;
}

/** The key being validated, for error messages. */
export interface At {
  key: string;
  origin: Origin;
  /** Secrets are reported by length only, so they do not end up in logs. */
  secret?: boolean;
}

function where(at: At): string {
  return `${at.key} (from ${at.origin.label})`;
}

export function show(value: unknown, secret = false): string {
  if (secret && typeof value === "string") return `a value of ${value.length} character${value.length === 1 ? "" : "s"}`;
  if (secret) return `${typeof value === "object" ? "an" : "a"} ${typeof value}`;
  // JSON keeps the message on one line even for multi-line values such as PEM text.
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    // A YAML alias that contains itself (`&a [*a]`) or nesting deep enough to overflow the stack.
    text = Array.isArray(value) ? "a list that cannot be shown" : "a mapping that cannot be shown";
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export function fail(at: At, value: unknown, allowed: string): never {
  throw new ConfigError(`${where(at)}: ${show(value, at.secret)} is not allowed: ${allowed}`);
}

export function problem(at: At, text: string): ConfigError {
  return new ConfigError(`${where(at)}: ${text}`);
}

/** The first line of an error's message, so that a message built from it stays on one line. */
export function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0] ?? text;
}
