import { defineConfig } from 'vitest/config';

// The tests cover DOM-free modules only, so they run in plain Node.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node'
  }
});
