// Two pages: the app (index.html) and a single-page app with client-side routes (spa.html).
import { resolve } from 'node:path';
import { defineConfig } from 'vite';

export default defineConfig({
  build: {
    rollupOptions: {
      input: {
        main: resolve(import.meta.dirname, 'index.html'),
        spa: resolve(import.meta.dirname, 'spa.html'),
      },
    },
  },
});
