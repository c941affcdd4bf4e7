// Builds the dashboard into realtime/static/dashboard/, which the web process serves at `/`.
// `npm run dev` serves it with hot reload and proxies the server's routes to REALTIME_URL.
import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));
const server = process.env.REALTIME_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  root: here,
  base: "/",
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL("../realtime/static/dashboard", import.meta.url)),
    emptyOutDir: true,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      "/socket.io": { target: server, ws: true },
      "/api": server,
      "/static": server,
    },
  },
});
