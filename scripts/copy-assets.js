// Copies the files tsc does not emit (the admin console's page, script and style) into dist.
import { cpSync } from "node:fs";

cpSync(new URL("../src/admin/ui/", import.meta.url), new URL("../dist/admin/ui/", import.meta.url), { recursive: true });
