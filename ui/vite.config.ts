// Builds the window's assets into ui/dist, which src-tauri embeds at compile time.
import { defineConfig } from "vite";

export default defineConfig({
  // Relative asset URLs: the app serves dist from its own custom protocol.
  base: "./",
  clearScreen: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // WebKitGTK on Debian 12 is recent enough for ES2022.
    target: "es2022",
    sourcemap: false,
  },
});
