import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { asPosition, type StreamPosition } from "../publication.js";

/** A decoded command frame; every field is untrusted until read through the helpers below. */
export type Frame = Record<string, unknown>;

const MAX_ID_LENGTH = 64;

/** The frame's id when it is a valid one, else undefined (the reply then goes without an id). */
export function idOf(frame: unknown): unknown {
  if (typeof frame !== "object" || frame === null) return undefined;
  const id = (frame as Frame).id;
  if (typeof id === "number" && Number.isSafeInteger(id) && id >= 0) return id;
  if (typeof id === "string" && id.length <= MAX_ID_LENGTH) return id;
  return undefined;
}

export function validateFrame(frame: unknown): Frame {
  if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
    throw new ProtocolError(ErrorCode.BadRequest, "a frame must be an object");
  }
  const f = frame as Frame;
  if (f.id !== undefined && idOf(f) === undefined) {
    throw new ProtocolError(ErrorCode.BadRequest, `id must be a non-negative integer or a string of at most ${MAX_ID_LENGTH} characters`);
  }
  if (typeof f.op !== "string") throw new ProtocolError(ErrorCode.BadRequest, "op must be a string");
  return f;
}

export function optionalString(cmd: Frame, key: string, max = 16384): string | undefined {
  const v = cmd[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v.length === 0 || v.length > max) {
    throw new ProtocolError(ErrorCode.BadRequest, `${key} must be a non-empty string of at most ${max} characters`);
  }
  return v;
}

export function requiredString(cmd: Frame, key: string, max: number): string {
  const v = optionalString(cmd, key, max);
  if (v === undefined) throw new ProtocolError(ErrorCode.BadRequest, `${key} is required`);
  return v;
}

export function optionalInteger(cmd: Frame, key: string, min: number, max: number): number | undefined {
  const v = cmd[key];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new ProtocolError(ErrorCode.BadRequest, `${key} must be an integer from ${min} to ${max}`);
  }
  return v;
}

export function optionalPosition(cmd: Frame, key: string): StreamPosition | undefined {
  const v = cmd[key];
  if (v === undefined) return undefined;
  const p = asPosition(v);
  if (!p) throw new ProtocolError(ErrorCode.BadRequest, `${key} must be {offset: non-negative integer, epoch: string}`);
  return p;
}
