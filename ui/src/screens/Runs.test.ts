import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import type { QueueUpdate, RunView } from "../lib/ipc";
import { runView } from "../components/runs/fixtures";

const h = vi.hoisted(() => ({ handler: null as ((u: QueueUpdate) => void) | null }));
const api = vi.hoisted(() => ({
  runsList: vi.fn<() => Promise<RunView[]>>(),
  runDelete: vi.fn<(id: string) => Promise<RunView>>(),
  runTag: vi.fn<(id: string, tags: string[], add: boolean) => Promise<RunView>>(),
  runNote: vi.fn<(id: string, text: string) => Promise<RunView>>(),
  queuePositions: vi.fn(() => Promise.resolve([])),
}));
vi.mock("../lib/ipc", () => ({
  api,
  onQueue: vi.fn((handler: (u: QueueUpdate) => void) => {
    h.handler = handler;
    return Promise.resolve(() => {});
  }),
  reveal: vi.fn(),
}));

import Runs from "./Runs.svelte";
import { live } from "../lib/live.svelte";

function emit(u: QueueUpdate) {
  if (!h.handler) throw new Error("live store not subscribed");
  h.handler(u);
}

function cell(id: string, n: number): HTMLElement {
  const row = screen.getAllByTestId("run-row").find((r) => r.dataset.id === id)!;
  return row.querySelectorAll("td")[n] as HTMLElement;
}

const RUNS = [
  runView("run-1", { method: "lora", best_eval_loss: 1.8, created_at: "2025-03-01 10:00:00" }),
  runView("run-2", { method: "qlora", best_eval_loss: 1.2, created_at: "2025-03-02 10:00:00", tags: ["baseline"] }),
  runView("run-3", { method: "dora", best_eval_loss: 1.5, status: "failed", created_at: "2025-03-03 10:00:00" }),
];

function rowIds(): string[] {
  return screen.getAllByTestId("run-row").map((r) => r.dataset.id ?? "");
}

describe("Runs screen", () => {
  beforeEach(() => {
    vi.clearAllMocks();
    api.runsList.mockResolvedValue(RUNS);
    location.hash = "#runs";
  });

  it("lists runs newest first, sorts by a column and filters by text and status", async () => {
    render(Runs);
    await waitFor(() => expect(rowIds()).toEqual(["run-3", "run-2", "run-1"]));

    const best = screen.getByTestId("sort-best");
    await fireEvent.click(best);
    expect(rowIds()).toEqual(["run-2", "run-3", "run-1"]);
    expect(best.closest("th")?.getAttribute("aria-sort")).toBe("ascending");
    await fireEvent.click(best);
    expect(rowIds()).toEqual(["run-1", "run-3", "run-2"]);
    expect(best.closest("th")?.getAttribute("aria-sort")).toBe("descending");

    await fireEvent.input(screen.getByTestId("runs-filter"), { target: { value: "baseline" } });
    expect(rowIds()).toEqual(["run-2"]);
    await fireEvent.input(screen.getByTestId("runs-filter"), { target: { value: "" } });
    await fireEvent.change(screen.getByTestId("runs-status-filter"), { target: { value: "failed" } });
    expect(rowIds()).toEqual(["run-3"]);
  });

  it("compares two picked runs", async () => {
    render(Runs);
    await waitFor(() => expect(rowIds().length).toBe(3));
    const compare = screen.getByTestId("runs-compare") as HTMLButtonElement;
    expect(compare.disabled).toBe(true);
    const boxes = screen.getAllByTestId("run-select");
    await fireEvent.click(boxes[2]); // run-1
    await fireEvent.click(boxes[0]); // run-3
    expect(compare.disabled).toBe(false);
    await fireEvent.click(compare);
    expect(location.hash).toBe(`#compare/${encodeURIComponent("run-1,run-3")}`);
  });

  it("deletes only after confirmation; Esc cancels and returns focus", async () => {
    api.runDelete.mockResolvedValue(RUNS[1]);
    render(Runs);
    await waitFor(() => expect(rowIds().length).toBe(3));
    const row = screen.getAllByTestId("run-row").find((r) => r.dataset.id === "run-2")!;
    const del = within(row).getByTestId("run-delete");
    del.focus();
    await fireEvent.click(del);
    const dialog = screen.getByRole("dialog");
    expect(dialog.textContent).toContain("run-2");
    expect(dialog.contains(document.activeElement)).toBe(true);

    await fireEvent.keyDown(dialog, { key: "Escape" });
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(api.runDelete).not.toHaveBeenCalled();
    expect(document.activeElement).toBe(del);

    await fireEvent.click(del);
    await fireEvent.click(screen.getByTestId("confirm-delete"));
    expect(api.runDelete).toHaveBeenCalledWith("run-2");
    await waitFor(() => expect(rowIds()).toEqual(["run-3", "run-1"]));
    expect(screen.queryByRole("dialog")).toBeNull();
  });

  it("shows the backend's refusal inside the dialog", async () => {
    api.runDelete.mockRejectedValue("run-3 is training: stop it before deleting");
    render(Runs);
    await waitFor(() => expect(rowIds().length).toBe(3));
    await fireEvent.click(screen.getAllByTestId("run-delete")[0]);
    await fireEvent.click(screen.getByTestId("confirm-delete"));
    await waitFor(() => expect(within(screen.getByRole("dialog")).getByRole("alert").textContent).toContain("stop it before deleting"));
    expect(rowIds().length).toBe(3);
  });

  it("adds and removes tags through the api", async () => {
    api.runTag.mockImplementation((id, tags, add) => {
      const r = RUNS.find((x) => x.id === id)!;
      return Promise.resolve({ ...r, tags: add ? [...r.tags, ...tags] : r.tags.filter((t: string) => !tags.includes(t)) });
    });
    render(Runs);
    await waitFor(() => expect(rowIds().length).toBe(3));
    const row = () => screen.getAllByTestId("run-row").find((r) => r.dataset.id === "run-1")!;
    await fireEvent.click(within(row()).getByTestId("run-tag-add"));
    const input = within(row()).getByTestId("run-tag-input");
    await fireEvent.input(input, { target: { value: "good lr" } });
    await fireEvent.keyDown(input, { key: "Enter" });
    expect(api.runTag).toHaveBeenCalledWith("run-1", ["good", "lr"], true);
    await waitFor(() => expect(within(row()).getAllByTestId("run-tag").map((t) => t.textContent?.replace("×", "").trim())).toEqual(["good", "lr"]));

    const r2 = screen.getAllByTestId("run-row").find((r) => r.dataset.id === "run-2")!;
    await fireEvent.click(within(r2).getByRole("button", { name: /baseline/ }));
    expect(api.runTag).toHaveBeenCalledWith("run-2", ["baseline"], false);
  });

  it("refreshes again when asked while a refresh was in flight", async () => {
    live.start();
    let first!: (v: RunView[]) => void;
    api.runsList.mockReset();
    api.runsList
      .mockImplementationOnce(() => new Promise((ok) => (first = ok)))
      .mockResolvedValueOnce([runView("run-q1", { status: "completed", best_eval_loss: 1.25 })]);
    render(Runs);
    await waitFor(() => expect(api.runsList).toHaveBeenCalledTimes(1));
    // queued and ended while the first list is still being read
    emit({ update: "ended", run_id: "run-q1", status: "completed", error: null });
    await Promise.resolve();
    first([runView("run-q1", { status: "queued", best_eval_loss: null })]);
    await waitFor(() => expect(api.runsList).toHaveBeenCalledTimes(2));
    await waitFor(() => expect(cell("run-q1", 8).textContent).toContain("1.25"));
  });

  it("shows the live status and step of a training run over the list's", async () => {
    live.start();
    api.runsList.mockResolvedValue([runView("run-l1", { status: "queued", steps_done: 0, total_steps: 50 })]);
    render(Runs);
    await waitFor(() => expect(rowIds()).toEqual(["run-l1"]));
    expect(cell("run-l1", 2).querySelector("[data-status]")?.getAttribute("data-status")).toBe("queued");
    emit({
      update: "events",
      run_id: "run-l1",
      events: [
        { event: "started", step: 0, total_steps: 50, train_records: 10, eval_records: 2, trainable_params: 1, total_params: 2, resumed_from: null },
        { event: "step", step: 7, loss: 2, lr: 1e-4, grad_norm: 1, tokens_per_s: 800, mem_bytes: 1, epoch: 0, tokens: 700, metrics: {} },
      ],
    });
    await waitFor(() => expect(cell("run-l1", 2).querySelector("[data-status]")?.getAttribute("data-status")).toBe("running"));
    expect(cell("run-l1", 7).textContent).toBe("7 / 50");
  });

  it("shows a list error as an alert", async () => {
    api.runsList.mockRejectedValue("database is locked");
    render(Runs);
    await waitFor(() => expect(screen.getByRole("alert").textContent).toContain("database is locked"));
  });
});
