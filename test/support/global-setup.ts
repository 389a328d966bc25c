/**
 * Vitest global setup of the integration projects: builds the mirror once into one ES module
 * (esbuild, dependencies left external), so that tests starting `hubcache` as a child process
 * (mirror-process.ts) start plain Node on it instead of compiling the TypeScript sources through
 * tsx at every start (about a second each; the crash tests start dozens). Same sources, same
 * entry point (src/main.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { TestProject } from 'vitest/node';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

declare module 'vitest' {
  export interface ProvidedContext {
    /** Absolute path of the bundled `src/main.ts`, for child-process mirrors. */
    mirrorBundle: string;
  }
}

export default async function setup(project: TestProject): Promise<() => void> {
  // Under node_modules: its bare imports resolve against the project's dependencies.
  const outfile = path.join(ROOT, 'node_modules', '.cache', 'hubcache-test', `main-${process.pid}-${project.name}.mjs`);
  await build({
    entryPoints: [path.join(ROOT, 'src', 'main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'inline',
    logLevel: 'warning',
  });
  project.provide('mirrorBundle', outfile);
  return () => fs.rmSync(outfile, { force: true });
}
