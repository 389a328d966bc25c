// @ts-check
// ESLint flat config. `npm run lint` (= `eslint .`) runs as part of `npm test`.
//
// - Every linted file gets @eslint/js recommended.
// - TypeScript under src/, test/ and bench/ (and vitest.config.ts) additionally gets
//   typescript-eslint's type-aware recommended rules, using the project service
//   (tsconfig.json includes src, test, bench and vitest.config.ts).
// - Plain JavaScript (this file, any scripts) is never type-checked.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

const TS_FILES = ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'scripts/**/*.ts', 'vitest.config.ts'];
const JS_FILES = ['**/*.js', '**/*.mjs', '**/*.cjs'];

// Node globals for plain .js files (TypeScript files rely on the compiler instead:
// typescript-eslint turns `no-undef` off for them). Kept inline so the config does
// not depend on the `globals` package, which is not a direct dependency.
const NODE_GLOBALS = /** @type {const} */ ({
  AbortController: 'readonly',
  AbortSignal: 'readonly',
  Buffer: 'readonly',
  TextDecoder: 'readonly',
  TextEncoder: 'readonly',
  URL: 'readonly',
  URLSearchParams: 'readonly',
  clearImmediate: 'readonly',
  clearInterval: 'readonly',
  clearTimeout: 'readonly',
  console: 'readonly',
  fetch: 'readonly',
  process: 'readonly',
  queueMicrotask: 'readonly',
  setImmediate: 'readonly',
  setInterval: 'readonly',
  setTimeout: 'readonly',
  structuredClone: 'readonly',
});

export default defineConfig(
  globalIgnores(['dist/', 'node_modules/', 'data/', 'coverage/', '.bench-tmp/'], 'hubcache/ignores'),

  {
    name: 'hubcache/linter-options',
    linterOptions: { reportUnusedDisableDirectives: 'warn' },
  },

  { name: '@eslint/js/recommended', ...js.configs.recommended },

  // All TypeScript: type-aware rules.
  {
    name: 'hubcache/typescript',
    files: TS_FILES,
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // `try { return await x } catch {}` must await, or the catch never sees the rejection.
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // `x == null` (null or undefined) is the one allowed loose comparison.
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // Logging goes through pino; CLI output through process.stdout/stderr.
      'no-console': 'error',
      'no-var': 'error',
      'prefer-const': 'error',
      'object-shorthand': ['error', 'always'],
    },
  },

  // Tests: type-aware rules stay on (a floating `expect(...).resolves` is a real bug),
  // but the unsafe-* family and non-null assertions only add noise there.
  {
    name: 'hubcache/tests',
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // expect(obj.method).toHaveBeenCalled() and friends.
      '@typescript-eslint/unbound-method': 'off',
      // Fake handlers are often `async` without awaiting anything.
      '@typescript-eslint/require-await': 'off',
    },
  },

  // console is fine in benchmarks and test helpers (e.g. the fake hub's debug output).
  {
    name: 'hubcache/console-allowed',
    files: ['bench/**/*.ts', 'test/support/**/*.ts'],
    rules: { 'no-console': 'off' },
  },

  // Plain JavaScript: never type-checked.
  {
    name: 'hubcache/javascript',
    files: JS_FILES,
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: {
      sourceType: 'module',
      globals: NODE_GLOBALS,
    },
  },
  {
    name: 'hubcache/commonjs',
    files: ['**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { require: 'readonly', module: 'writable', exports: 'writable', __dirname: 'readonly', __filename: 'readonly' },
    },
  },
);
