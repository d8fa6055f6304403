/**
 * How deeply a config text may nest, checked before any parser sees it. The YAML parser recurses
 * once per level, and a stack overflow inside it is not always an exception: when V8 happens to be
 * compiling a regular expression at that moment the whole process aborts. A real config nests
 * fewer than ten levels.
 */
export const MAX_CONFIG_DEPTH = 64;

/**
 * An upper bound on the nesting of a JSON or YAML text, in one pass without allocating: flow
 * brackets are counted wherever they stand (a quoted "[" counts too, and a stray "]" never lowers
 * the count below zero), and block nesting is bounded per line by half its indentation plus the
 * block indicators on it ("- ", "? ", ": "), which is how YAML nests without brackets.
 */
export function nestingBound(text: string): number {
  let flow = 0;
  let deepest = 0;
  let lineStart = true;
  let indent = 0;
  let block = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10 || c === 13) {
      lineStart = true;
      indent = 0;
      block = 0;
      continue;
    }
    if (lineStart && (c === 32 || c === 9)) {
      indent++;
    } else {
      lineStart = false;
      if (c === 91 || c === 123) flow++;
      else if ((c === 93 || c === 125) && flow > 0) flow--;
      else if ((c === 45 || c === 63 || c === 58) && isBlank(text.charCodeAt(i + 1))) block++;
    }
    const depth = flow + (indent >> 1) + block;
    if (depth > deepest) deepest = depth;
  }
  return deepest;
}

/** A block indicator is followed by a space, a tab, a line break or the end of the text. */
function isBlank(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || Number.isNaN(c);
}
