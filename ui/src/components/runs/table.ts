// Filtering and sorting of the run history table (pure, so it is tested without a DOM).
import type { RunView } from "../../lib/ipc";
import { dateMs } from "./format";

export const SORT_KEYS = ["id", "status", "method", "model", "dataset", "created", "steps", "best", "tps", "mem"] as const;
export type SortKey = (typeof SORT_KEYS)[number];
export type SortDir = "asc" | "desc";
export interface SortState {
  key: SortKey;
  dir: SortDir;
}

type Value = string | number | null;

function valueOf(r: RunView, key: SortKey): Value {
  switch (key) {
    case "id":
      return r.id;
    case "status":
      return r.status;
    case "method":
      return r.method;
    case "model":
      return r.model;
    case "dataset":
      return r.dataset;
    case "created":
      return dateMs(r.created_at);
    case "steps":
      return r.steps_done;
    case "best":
      return r.best_eval_loss ?? null;
    case "tps":
      return r.tokens_per_s ?? null;
    case "mem":
      return r.peak_mem_bytes ?? null;
  }
}

const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

/** Rows in `sort` order; missing values always last, ties in id order. */
export function sortRuns(runs: readonly RunView[], sort: SortState): RunView[] {
  const sign = sort.dir === "asc" ? 1 : -1;
  return runs.slice().sort((a, b) => {
    const va = valueOf(a, sort.key);
    const vb = valueOf(b, sort.key);
    if (va == null || vb == null) {
      if (va == null && vb == null) return collator.compare(a.id, b.id);
      return va == null ? 1 : -1;
    }
    const c = typeof va === "number" && typeof vb === "number" ? va - vb : collator.compare(String(va), String(vb));
    return c !== 0 ? sign * c : collator.compare(a.id, b.id);
  });
}

/** Rows whose id, method, model, dataset or a tag contains every word of `text` (any case),
 *  with `status` ("" = any). */
export function filterRuns(runs: readonly RunView[], text: string, status: string): RunView[] {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  return runs.filter((r) => {
    if (status && r.status !== status) return false;
    if (!words.length) return true;
    const hay = [r.id, r.method, r.model, r.dataset, ...r.tags].join("\n").toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

/** The next sort after a click on `key`'s header: toggles direction on the same column;
 *  numbers start descending except loss and memory (lower is better, so ascending first). */
export function nextSort(current: SortState, key: SortKey): SortState {
  if (current.key === key) return { key, dir: current.dir === "asc" ? "desc" : "asc" };
  const descFirst = key === "created" || key === "steps" || key === "tps";
  return { key, dir: descFirst ? "desc" : "asc" };
}
