/**
 * Vitest global setup of the integration projects: builds the mirror once into one ES module
 * (esbuild, dependencies left external), so that tests starting `hubcache` as a child process
 * (mirror-process.ts) start plain Node on it instead of compiling the TypeScript sources through
 * tsx at every start (about a second each; the crash tests start dozens). Same sources, same
 * entry point (src/main.ts). Split into chunks, so that what the sources import lazily (the S3
 * driver and its SDK) stays lazy in the bundle too.
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
  const outdir = path.join(ROOT, 'node_modules', '.cache', 'hubcache-test', `main-${process.pid}-${project.name}`);
  await build({
    entryPoints: [path.join(ROOT, 'src', 'main.ts')],
    outdir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    // No inline source map: children run without --enable-source-maps, and a 1.5 MB map comment
    // only doubles what every start reads and scans.
    sourcemap: false,
    logLevel: 'warning',
  });
  project.provide('mirrorBundle', path.join(outdir, 'main.mjs'));
  return () => fs.rmSync(outdir, { recursive: true, force: true });
}
