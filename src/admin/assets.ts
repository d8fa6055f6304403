import { readFileSync } from "node:fs";
import type { Reply } from "../http/respond.js";

const TYPES = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "style.css": "text/css; charset=utf-8",
} as const;

export type Asset = keyof typeof TYPES;

/**
 * The page only runs its own script and style, talks only to this origin and cannot be framed;
 * hostile text it shows (channel names, user ids, publication data) is set as text, never markup.
 */
const HEADERS = {
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
};

/** The console's page, script and style (src/admin/ui, copied into dist by the build), read once. */
export class ConsoleAssets {
  private readonly files = new Map<Asset, Buffer>();

  constructor() {
    for (const name of Object.keys(TYPES) as Asset[]) {
      this.files.set(name, readFileSync(new URL(`./ui/${name}`, import.meta.url)));
    }
  }

  serve(reply: Reply, name: Asset): void {
    reply.send(200, this.files.get(name) as Buffer, TYPES[name], HEADERS);
  }
}
