import type { GatewayProcess } from "./gateway.js";

/** A logged-in admin console session, spoken to over plain HTTP as the page does. */
export interface AdminSession {
  cookie: string;
  csrf: string;
  get(path: string): Promise<{ status: number; body: Record<string, unknown> }>;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }>;
}

export function adminLogin(gw: GatewayProcess, secret: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${gw.adminUrl}/admin/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams({ secret }).toString(),
  });
}

async function answer(res: Response): Promise<{ status: number; body: Record<string, unknown> }> {
  const text = await res.text();
  return { status: res.status, body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

export async function adminSession(gw: GatewayProcess, secret: string): Promise<AdminSession> {
  const res = await adminLogin(gw, secret);
  if (res.status !== 204) throw new Error(`admin login failed: ${res.status} ${await res.text()}`);
  const cookie = (res.headers.get("set-cookie") ?? "").split(";")[0] as string;
  const session = await answer(await fetch(`${gw.adminUrl}/admin/api/session`, { headers: { cookie } }));
  const csrf = session.body.csrf as string;
  return {
    cookie,
    csrf,
    get: async (path) => answer(await fetch(gw.adminUrl + path, { headers: { cookie } })),
    post: async (path, body, headers = { "x-csrf-token": csrf }) =>
      answer(
        await fetch(gw.adminUrl + path, {
          method: "POST",
          headers: { cookie, "content-type": "application/json", ...headers },
          body: JSON.stringify(body),
        }),
      ),
  };
}
