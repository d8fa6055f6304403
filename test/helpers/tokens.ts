import { SignJWT, type CryptoKey, type JWTPayload } from "jose";

/** A signing key: a string is an HMAC secret (its UTF-8 bytes). */
export type SigningKey = CryptoKey | Uint8Array | string;

/** Signs `payload` as a compact JWT with the header `{alg, typ: "JWT", kid?}`; HS256 unless told. */
export function signToken(payload: JWTPayload, key: SigningKey, alg = "HS256", kid?: string): Promise<string> {
  const secret = typeof key === "string" ? new TextEncoder().encode(key) : key;
  return new SignJWT(payload).setProtectedHeader({ alg, typ: "JWT", ...(kid !== undefined && { kid }) }).sign(secret);
}
