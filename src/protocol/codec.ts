import { FrameError } from "./codes.js";
import { MsgpackError, pack, unpackAll } from "./msgpack.js";

export type Format = "json" | "msgpack";

export const SUBPROTOCOLS: Record<string, Format> = {
  "natsedge.v1.json": "json",
  "natsedge.v1.msgpack": "msgpack",
};

/** One WebSocket message may carry many frames; more than this is abuse, not batching. */
export const MAX_FRAMES_PER_MESSAGE = 100;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Splits one transport message into frames. Throws FrameError for bytes that are not frames at
 * all; whether each frame is a valid command is the session's business.
 */
export function decodeFrames(format: Format, bytes: Uint8Array): unknown[] {
  let frames: unknown[];
  if (format === "json") {
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      throw new FrameError("frame is not valid UTF-8");
    }
    frames = [];
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      if (frames.length >= MAX_FRAMES_PER_MESSAGE) throw new FrameError("too many frames in one message");
      try {
        frames.push(JSON.parse(line));
      } catch {
        throw new FrameError("frame is not valid JSON");
      }
    }
  } else {
    try {
      frames = unpackAll(bytes, MAX_FRAMES_PER_MESSAGE);
    } catch (err) {
      throw new FrameError(err instanceof MsgpackError ? err.message : "frame is not valid MessagePack");
    }
  }
  if (frames.length === 0) throw new FrameError("empty message");
  return frames;
}

export function encodeFrame(format: Format, frame: object): Buffer {
  return format === "json" ? Buffer.from(JSON.stringify(frame), "utf8") : pack(frame);
}
