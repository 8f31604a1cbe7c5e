// Test-only entry: install the mocked IPC before the app loads, then mount it as main.ts does.
// Query parameters: `?state=empty` (nothing registered: the first-run state),
// `?batches=N` and `?batchMs=N` (how long a started run trains).
import { mockIPC, mockWindows } from "@tauri-apps/api/mocks";
import { MockBackend } from "./backend";

declare global {
  interface Window {
    /** The fake backend, for specs to inspect (`calls`) through `page.evaluate`. */
    __whetstoneMock?: MockBackend;
  }
}

const params = new URLSearchParams(location.search);
const positive = (v: string | null) => (v && Number(v) > 0 ? Number(v) : undefined);
const backend = new MockBackend({
  empty: params.get("state") === "empty",
  batches: positive(params.get("batches")),
  batchMs: positive(params.get("batchMs")),
});
window.__whetstoneMock = backend;

mockWindows("main");
mockIPC((cmd, payload) => backend.handle(cmd, payload), { shouldMockEvents: true });

// Only now load the app, so nothing can reach the bridge before the mock is in place.
await import("../../src/styles.css");
const { mount } = await import("svelte");
const { default: App } = await import("../../src/App.svelte");
const target = document.getElementById("app");
if (!target) throw new Error("tests/mock/index.html lacks #app");
mount(App, { target });
