/**
 * Which browser pages may talk to the gateway. Non-browser clients send no Origin header and are
 * never blocked here (they authenticate with tokens or the API key instead).
 */
export class OriginPolicy {
  private readonly patterns: RegExp[] | undefined;

  /** `undefined` patterns = same-origin only; `anyOrigin` = the embedded no-config default. */
  constructor(
    patterns: readonly string[] | undefined,
    private readonly anyOrigin: boolean,
  ) {
    this.patterns = patterns?.map(toRegExp);
  }

  allows(origin: string, host: string): boolean {
    if (origin === "" || this.anyOrigin) return true;
    if (this.patterns) return this.patterns.some((re) => re.test(origin.toLowerCase()));
    return sameOrigin(origin, host);
  }
}

function toRegExp(pattern: string): RegExp {
  if (pattern === "*") return /^.*$/u;
  const escaped = pattern
    .toLowerCase()
    .split("*")
    .map((part) => part.replace(/[.+?^${}()|[\]\\/]/gu, "\\$&"))
    // A wildcard stands for one or more DNS labels, never for the scheme or a port.
    .join("[a-z0-9-]+(?:\\.[a-z0-9-]+)*");
  return new RegExp(`^${escaped}$`, "u");
}

function sameOrigin(origin: string, host: string): boolean {
  try {
    return new URL(origin).host === host.toLowerCase();
  } catch {
    return false;
  }
}
