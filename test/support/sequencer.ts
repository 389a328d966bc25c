/**
 * The order vitest starts test files in: within each project, the files known to take longest
 * first, then vitest's own order. On a fresh clone vitest has no timings and starts large files
 * first; a long file that happens to be small (crash-safety) then starts last and runs alone at
 * the end (84 s of a 260 s run). Longest first keeps the workers busy until the end.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Integration files by measured duration, longest first (basenames without `.test.ts`). */
const LONGEST_FIRST = [
  'segmented',
  'crash-safety',
  's3-mirror',
  'replicas',
  'blob-store-contract',
  'peer-stream',
  'prefetch',
  'import',
  'offline',
  'upstream-faults',
  'clients',
  'tiered-mirrors',
  'cache-index-contract',
  'health-cli',
  'eviction',
  'failover',
  'dashboard-browser',
  's3-store-smoke',
  'admin-api',
  'config-cli',
];

function rank(spec: TestSpecification): number {
  const i = LONGEST_FIRST.findIndex((name) => spec.moduleId.endsWith(`/${name}.test.ts`));
  return i === -1 ? LONGEST_FIRST.length : i;
}

export class LongestFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const base = await super.sort(files);
    // Projects keep their place in vitest's order (group order, then name); files move within theirs.
    const at = new Map(base.map((f, i) => [f, i]));
    const projectAt = new Map<string, number>();
    base.forEach((f, i) => {
      if (!projectAt.has(f.project.name)) projectAt.set(f.project.name, i);
    });
    const key = (f: TestSpecification): [number, number, number] => [projectAt.get(f.project.name) ?? 0, rank(f), at.get(f) ?? 0];
    return [...base].sort((a, b) => {
      const [ka, kb] = [key(a), key(b)];
      return ka[0] - kb[0] || ka[1] - kb[1] || ka[2] - kb[2];
    });
  }
}
