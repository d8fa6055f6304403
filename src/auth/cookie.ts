/**
 * Reads one cookie from a `Cookie` request header (`a=b; c=d`). The header is client-controlled,
 * so anything malformed is skipped rather than thrown on.
 *
 * When a name repeats, the first occurrence wins: browsers send cookies with the most specific
 * path first (RFC 6265 section 5.4).
 */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header || !name) return undefined;
  for (const pair of header.split(";")) {
    const eq = pair.indexOf("=");
    if (eq === -1 || pair.slice(0, eq).trim() !== name) continue;
    let value = pair.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
      value = value.slice(1, -1);
    }
    return percentDecode(value);
  }
  return undefined;
}

// Percent-encoding is a convention, not part of RFC 6265: a value that is not valid
// percent-encoded UTF-8 is returned as sent.
function percentDecode(value: string): string {
  if (!value.includes("%")) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
