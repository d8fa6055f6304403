import { readFileSync } from "node:fs";

/** natsedge's version, from package.json (one level above both src/ and dist/). */
export function version(): string {
  try {
    const manifest: unknown = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    return typeof manifest === "object" && manifest !== null && "version" in manifest ? String(manifest.version) : "unknown";
  } catch {
    return "unknown";
  }
}
