// Builds the window's assets into ui/dist, which src-tauri embeds at compile time.
import { defineConfig } from "vite";

export default defineConfig({
  // Relative asset URLs: the app serves dist from its own custom protocol.
  base: "./",
  clearScreen: false,
  resolve: {
    // One Automerge for the whole UI, the "slim" build: its WebAssembly is a
    // file that `editor.ts` loads on first use, so the window paints before the
    // editor's engine is ready.
    alias: [{ find: /^@automerge\/automerge$/, replacement: "@automerge/automerge/slim" }],
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // WebKitGTK on Debian 12 is recent enough for ES2022.
    target: "es2022",
    sourcemap: false,
    // Automerge's WebAssembly is ~3.6 MB; it is a local file, not a download.
    chunkSizeWarningLimit: 4096,
  },
});
