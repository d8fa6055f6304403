// Writes the config file's JSON Schema from the settings table (run after `npm run build`).
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SCHEMA_FILE, schemaText } from "../dist/config/load.js";

const file = join(dirname(fileURLToPath(import.meta.url)), "..", SCHEMA_FILE);
mkdirSync(dirname(file), { recursive: true });
writeFileSync(file, schemaText());
console.log(`wrote ${SCHEMA_FILE}`);
