// The wizard's Goal step: what the run optimises (the engine's `objective` setting) and
// which dataset formats each objective can learn from.
import { getPair } from "./wizard";

export const OBJECTIVES = ["sft", "dpo", "orpo", "kto"] as const;
export type Objective = (typeof OBJECTIVES)[number];

/** Whether a dataset of `format` (as `datasets add` detected it) can train `o`: SFT learns
 * from anything (from pairs, the chosen answers), DPO and ORPO need pairs, KTO rated
 * answers or pairs. */
export function objectiveFits(o: Objective, format: string): boolean {
  if (o === "sft") return true;
  if (o === "kto") return format === "preference" || format === "kto";
  return format === "preference";
}

/** The goal a dataset suggests: DPO for pairs, KTO for ratings, SFT otherwise. */
export function defaultObjective(format: string): Objective {
  return format === "preference" ? "dpo" : format === "kto" ? "kto" : "sft";
}

/** The objective the settings name (`objective=...`), SFT when they name none. */
export function objectiveOf(sets: readonly string[]): Objective {
  const v = getPair(sets, "objective");
  return (OBJECTIVES as readonly string[]).includes(v ?? "") ? (v as Objective) : "sft";
}
