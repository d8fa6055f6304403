import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "load-tests/node_modules/", "load-tests/results/", "coverage/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["src/admin/ui/**/*.js"],
    languageOptions: { globals: { window: "readonly", document: "readonly", location: "readonly", Node: "readonly", FormData: "readonly" } },
  },
  {
    languageOptions: { globals: { process: "readonly", console: "readonly", Buffer: "readonly", setTimeout: "readonly", clearTimeout: "readonly", setInterval: "readonly", clearInterval: "readonly", URL: "readonly", URLSearchParams: "readonly", TextDecoder: "readonly", TextEncoder: "readonly", performance: "readonly", fetch: "readonly", AbortController: "readonly", AbortSignal: "readonly", setImmediate: "readonly", clearImmediate: "readonly", queueMicrotask: "readonly", atob: "readonly", btoa: "readonly", structuredClone: "readonly" } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
);
