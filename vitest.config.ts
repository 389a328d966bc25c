import { configDefaults, defineConfig } from 'vitest/config';
import { LongestFirstSequencer } from './test/support/sequencer.js';

/**
 * Integration files that load the machine (herds of clients, 2,000 connections, a tmpfs filled
 * up, hundreds of MB through the mirror): they run after the rest, two at a time (alone, one of
 * them keeps this 2-core box only two-thirds busy).
 */
const HEAVY = ['test/integration/fill.test.ts', 'test/integration/resources.test.ts'];

/** Files run at once in the first group: most integration files mostly wait (timeouts, Retry-After, child tools). */
const PARALLEL_WORKERS = 3;

// Three projects: fast pure unit tests; integration tests that start real servers (the mirror
// and the fake hub) on 127.0.0.1 port 0 and drive real clients, several files at a time; and the
// heavy integration files, alone, once the others are done (sequence.groupOrder).
export default defineConfig({
  test: {
    sequence: { sequencer: LongestFirstSequencer },
    projects: [
      {
        test: {
          name: 'unit',
          // Pure modules, no global state: one module graph per worker instead of one per file.
          isolate: false,
          include: ['test/unit/**/*.test.ts'],
          // Bounds, not budgets: a test ends on its own long before (see wait-for.ts).
          testTimeout: 30_000,
          sequence: { groupOrder: 0 },
          maxWorkers: PARALLEL_WORKERS,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // One module graph per worker (imports once, not once per file): no test stubs modules
          // or globals, and each file starts and stops its own servers.
          isolate: false,
          exclude: [...configDefaults.exclude, ...HEAVY],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // The bundle for child-process mirrors, and one Swift and one PostgreSQL for every file.
          globalSetup: ['test/support/global-setup.ts', 'test/support/shared-services.ts'],
          sequence: { groupOrder: 0 },
          maxWorkers: PARALLEL_WORKERS,
        },
      },
      {
        test: {
          name: 'integration-heavy',
          include: HEAVY,
          testTimeout: 180_000,
          hookTimeout: 120_000,
          globalSetup: ['test/support/global-setup.ts'],
          sequence: { groupOrder: 1 },
          maxWorkers: 2,
        },
      },
    ],
  },
});
