// The new-run wizard's draft, kept for as long as the window is open: leaving the wizard
// for another screen and coming back finds the same choices.
import type { DatasetRecord, GridAxis, MethodKind, ModelRecord } from "./ipc";
import { PRESETS } from "./wizard";

export const STEPS = ["model", "dataset", "goal", "method", "settings", "review"] as const;
export type StepId = (typeof STEPS)[number];

export type Draft = {
  step: number;
  model: ModelRecord | null;
  dataset: DatasetRecord | null;
  method: MethodKind | null;
  /** True once the person picked a method: the recommendation then no longer overrides it. */
  methodChosen: boolean;
  /** True once the person picked a goal: the dataset's suggestion then no longer overrides it. */
  goalChosen: boolean;
  sets: string[];
  /** The Settings step's Sweep option: on, and the swept keys with their values. */
  sweepOn: boolean;
  sweep: GridAxis[];
};

function fresh(): Draft {
  return { step: 0, model: null, dataset: null, method: null, methodChosen: false, goalChosen: false, sets: [...PRESETS.balanced], sweepOn: false, sweep: [] };
}

export const draft = $state<Draft>(fresh());

export function resetDraft(): void {
  Object.assign(draft, fresh());
}
