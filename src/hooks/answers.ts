import { MAX_SUB_LENGTH } from "../auth/jwt.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { dataProblem } from "../protocol/payload.js";
import { HookFailure } from "./caller.js";

/**
 * Backend answers, checked before anything acts on them: `{"result": {...}}` or
 * `{"error": {"code", "message", "retryAfter"?}}`. Anything else is a failed call (fail closed,
 * or open where so configured), never a crash and never a partial decision.
 */

/** The codes a backend may refuse with; they reach the client as they are. */
const REFUSALS: ReadonlySet<number> = new Set([ErrorCode.BadRequest, ErrorCode.Unauthenticated, ErrorCode.Forbidden, ErrorCode.NotFound, ErrorCode.RateLimited]);
const MAX_MESSAGE = 256;
const MAX_CHANNELS = 128;
const MAX_RETRY_AFTER = 3600;

type Result = Record<string, unknown>;

const invalid = (why: string): HookFailure => new HookFailure("invalid", why);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The `result` object of an answer; a refusal is thrown as the ProtocolError the client gets. */
export function parseAnswer(bytes: Buffer): Result {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw invalid("answer is not JSON");
  }
  if (!isObject(v)) throw invalid("answer is not a JSON object");
  const problem = dataProblem(v);
  if (problem) throw invalid(problem);
  if (isObject(v.error) && v.result === undefined) throw refusal(v.error);
  if (isObject(v.result) && v.error === undefined) return v.result;
  throw invalid('answer must hold exactly one of "result" (an object) and "error" (an object)');
}

function refusal(e: Record<string, unknown>): ProtocolError {
  const { code, message, retryAfter } = e;
  if (typeof code !== "number" || !REFUSALS.has(code)) throw invalid(`error.code must be one of ${[...REFUSALS].join(", ")}`);
  if (typeof message !== "string" || message.length > MAX_MESSAGE) throw invalid(`error.message must be a string of at most ${MAX_MESSAGE} characters`);
  if (retryAfter !== undefined && !(Number.isInteger(retryAfter) && (retryAfter as number) >= 1 && (retryAfter as number) <= MAX_RETRY_AFTER)) {
    throw invalid(`error.retryAfter must be an integer from 1 to ${MAX_RETRY_AFTER}`);
  }
  return new ProtocolError(code as ErrorCode, message, retryAfter as number | undefined);
}

function expiry(r: Result): number | undefined {
  const exp = r.exp;
  if (exp === undefined) return undefined;
  if (typeof exp !== "number" || !Number.isSafeInteger(exp) || exp <= 0) throw invalid("exp must be a positive integer (seconds since the epoch)");
  if (exp * 1000 <= Date.now()) throw invalid("exp is in the past");
  return exp;
}

export interface ConnectGrant {
  user: string;
  exp?: number;
  info?: unknown;
  /** Channels the backend subscribes the client to (WebSocket). */
  channels?: string[];
}

export function connectGrant(r: Result): ConnectGrant {
  const { user, info, channels } = r;
  if (typeof user !== "string" || user.length === 0 || user.length > MAX_SUB_LENGTH) {
    throw invalid(`user must be a non-empty string of at most ${MAX_SUB_LENGTH} characters`);
  }
  const grant: ConnectGrant = { user };
  const exp = expiry(r);
  if (exp !== undefined) grant.exp = exp;
  if (info !== undefined) grant.info = info;
  if (channels !== undefined) {
    if (!Array.isArray(channels) || channels.length > MAX_CHANNELS || !channels.every((c) => typeof c === "string")) {
      throw invalid(`channels must be a list of at most ${MAX_CHANNELS} channel names`);
    }
    grant.channels = channels as string[];
  }
  return grant;
}

export interface RefreshGrant {
  exp?: number;
  info?: unknown;
}

export function refreshGrant(r: Result): RefreshGrant {
  const grant: RefreshGrant = {};
  const exp = expiry(r);
  if (exp !== undefined) grant.exp = exp;
  if (r.info !== undefined) grant.info = r.info;
  return grant;
}

/** Subscribe: `info`, when given, is the client's info in this channel's presence and join/leave. */
export interface SubscribeGrant {
  info?: unknown;
}

export function subscribeGrant(r: Result): SubscribeGrant {
  return r.info === undefined ? {} : { info: r.info };
}

/** Publish: `data` replaces the client's data; without it the publication goes as sent. RPC: the answer. */
export function dataOf(r: Result): { data?: unknown } {
  return Object.hasOwn(r, "data") && r.data !== undefined ? { data: r.data } : {};
}
