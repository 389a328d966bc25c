import { defineConfig } from 'vitest/config';

// Two projects: fast pure unit tests, and integration tests that start real servers
// (the mirror and the fake hub) on 127.0.0.1 port 0 and drive real clients.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 60_000,
          // Servers and big files: keep files from competing for the 2 cores.
          fileParallelism: false,
        },
      },
    ],
  },
});
