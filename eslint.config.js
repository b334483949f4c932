// Lint: typescript-eslint's strict, type-aware rules over sources, tests and benchmarks. Tests and
// benchmarks may assert non-null (a failing assertion is a failing test there).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", ".ci/", "bench/results/", "bench/*.mjs", "eslint.config.js"] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { project: "./tsconfig.test.json", tsconfigRootDir: import.meta.dirname } },
    rules: {
      // SPIFFE IDs and trust domains print as their canonical string (toString).
      "@typescript-eslint/restrict-template-expressions": [
        "error",
        { allowNumber: true, allowBoolean: true, allowNullish: true, allow: [{ from: "file", name: ["SpiffeId", "TrustDomain"] }] },
      ],
      "@typescript-eslint/no-confusing-void-expression": ["error", { ignoreArrowShorthand: true, ignoreVoidOperator: true }],
      "@typescript-eslint/no-meaningless-void-operator": "off",
      // noUncheckedIndexedAccess makes every index read optional; a `!` on a regex group its pattern
      // guarantees, or on a value the schema has already validated, says so. Where state could really
      // be absent (the session's stages) the types carry it instead.
      "@typescript-eslint/no-non-null-assertion": "off",
      // A rest sibling drops a field on purpose (`const { cause: _c, ...rest } = d`).
      "@typescript-eslint/no-unused-vars": ["error", { ignoreRestSiblings: true, argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["test/**", "testkit/**", "bench/**"],
    rules: {
      // Flags flipped by closures (`while (!stop)`) read as constant to the checker.
      "@typescript-eslint/no-unnecessary-condition": "off",
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
);
