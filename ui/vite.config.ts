import { defineConfig } from "vitest/config";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// Tauri serves the built files; the dev server port matches tauri.conf.json's devUrl.
export default defineConfig({
  plugins: [svelte()],
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  // Nothing inlined as a data: URL: the window's CSP loads fonts from 'self' only.
  build: { target: "es2022", outDir: "dist", emptyOutDir: true, assetsInlineLimit: 0 },
  // Component tests mount Svelte's browser build, not its server build.
  resolve: process.env.VITEST ? { conditions: ["browser"] } : undefined,
  test: {
    environment: "jsdom",
    // globals lets @testing-library/svelte unmount each component after its test.
    globals: true,
    include: ["src/**/*.test.ts"],
  },
});
