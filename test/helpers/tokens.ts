import { SignJWT, type CryptoKey, type JWTPayload } from "jose";

/** A signing key: a string is an HMAC secret (its UTF-8 bytes). */
export type SigningKey = CryptoKey | Uint8Array | string;

/**
 * Signs `payload` as a compact JWT with the header `{alg, typ: "JWT", kid?}`; HS256 unless told.
 * Gateways require `exp` by default, so a payload without the key gets one an hour ahead; pass
 * `exp: undefined` for a token that never expires.
 */
export function signToken(payload: JWTPayload, key: SigningKey, alg = "HS256", kid?: string): Promise<string> {
  const secret = typeof key === "string" ? new TextEncoder().encode(key) : key;
  const claims = "exp" in payload ? payload : { ...payload, exp: Math.floor(Date.now() / 1000) + 3600 };
  return new SignJWT(claims).setProtectedHeader({ alg, typ: "JWT", ...(kid !== undefined && { kid }) }).sign(secret);
}
