import type { HttpResponse } from "../uws.js";
import type { OriginPolicy } from "./origin.js";

/**
 * CORS for the browser-facing HTTP endpoints. The allowed origin is echoed (never `*`) so that
 * credentials (cookies) work, with `Vary: Origin` for caches.
 */
export function corsHeaders(origin: string, host: string, origins: OriginPolicy): Record<string, string> | undefined {
  if (!origins.allows(origin, host)) return undefined;
  if (origin === "") return {};
  return {
    "Access-Control-Allow-Origin": origin,
    "Access-Control-Allow-Credentials": "true",
    Vary: "Origin",
  };
}

/** Answers a preflight: 204 with the allowed methods and headers, or 403 for other origins. */
export function answerPreflight(res: HttpResponse, origin: string, host: string, origins: OriginPolicy, methods: string): void {
  const cors = corsHeaders(origin, host, origins);
  res.cork(() => {
    if (!cors) {
      res.writeStatus("403 Forbidden").end();
      return;
    }
    res.writeStatus("204 No Content");
    for (const [k, v] of Object.entries(cors)) res.writeHeader(k, v);
    res.writeHeader("Access-Control-Allow-Methods", methods);
    res.writeHeader("Access-Control-Allow-Headers", "Content-Type, Authorization, Last-Event-ID");
    res.writeHeader("Access-Control-Max-Age", "600");
    res.end();
  });
}
