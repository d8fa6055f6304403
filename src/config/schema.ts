/**
 * The JSON Schema (draft 2020-12) of a config file, built from the settings table so that editors
 * and example checks see the same keys, nesting and allowed values as the loader.
 * schema/natsedge.schema.json is its output, written by `npm run schema`.
 */

import type { Schema } from "./kinds.js";
import { envNames, flagNames, KEYS, SETTINGS, type Key } from "./settings.js";

/** Written by `npm run schema`, shipped in the package, checked against configSchema() by a test. */
export const SCHEMA_FILE = "schema/natsedge.schema.json";

/** The key of a JSON config file that names its schema, as editors expect; the loader skips it. */
export const SCHEMA_KEY = "$schema";

const NULL = { type: "null" } as const;

interface Node {
  key?: Key;
  children: Map<string, Node>;
}

/** Settings nested as the file nests them: `nats.tls.caFile` is caFile in tls in nats. */
function tree(): Node {
  const root: Node = { children: new Map() };
  for (const key of KEYS) {
    let node = root;
    for (const part of key.split(".")) {
      const next = node.children.get(part) ?? { children: new Map() };
      node.children.set(part, next);
      node = next;
    }
    node.key = key;
  }
  return root;
}

/** Raw defaults are strings; a file writes numbers and booleans as themselves. */
function fileDefault(raw: string): string | number | boolean {
  if (/^\d+$/.test(raw)) return Number(raw);
  return raw === "true" || raw === "false" ? raw === "true" : raw;
}

function describe(key: Key): string {
  const setting = SETTINGS[key];
  const names = [...flagNames(key), ...envNames(key)].join(", ");
  return `${setting.about}: ${setting.kind.allowed}. Default: ${setting.default ?? setting.defaultText ?? "unset"}. (${names})`;
}

function group(node: Node): Schema {
  const properties = Object.fromEntries([...node.children].map(([name, child]) => [name, property(child)]));
  return { type: "object", properties, additionalProperties: false };
}

/** A null value counts as not set, so every key and group may be null. */
function property(node: Node): Schema {
  const { key } = node;
  const choices: Schema[] = [NULL];
  if (key !== undefined) choices.push(SETTINGS[key].kind.schema);
  if (node.children.size > 0) choices.push(group(node));
  const raw = key === undefined ? undefined : SETTINGS[key].default;
  return {
    ...(key === undefined ? {} : { description: describe(key) }),
    ...(raw === undefined ? {} : { default: fileDefault(raw) }),
    anyOf: choices,
  };
}

export function configSchema(): Schema {
  const top = group(tree());
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "natsedge configuration file",
    description: "Settings of the natsedge gateway (docs/configuration.md). Rules that span several settings or sources, such as one auth key source, are checked by `natsedge check-config` and at start-up.",
    type: ["object", "null"],
    properties: { [SCHEMA_KEY]: { description: "The schema this file follows, for editors; ignored by natsedge", type: "string" }, ...(top.properties as Schema) },
    additionalProperties: false,
  };
}

/** The text of SCHEMA_FILE. */
export const schemaText = (): string => `${JSON.stringify(configSchema(), null, 2)}\n`;
