// The mocked backend counts trainable parameters with its own formula (it must answer for
// any settings a Playwright test picks); here that formula meets the engine's counts, which
// a Rust test wrote to `tests/mock/engine-facts.json` for a grid of settings per method.
import { describe, expect, it } from "vitest";
import { FACTS } from "../../tests/mock/engine-facts";
import { configWith } from "../../tests/mock/backend";
import { isMessageKey, translate } from "./i18n";
import { SMOL, trainableParams } from "../../tests/mock/fixtures";

describe("the mock's engine facts", () => {
  it("counts SmolLM2's parameters as the engine does", () => {
    expect(SMOL.params).toBe(FACTS.smollm2_params);
  });

  for (const m of FACTS.methods) {
    it(`counts ${m.id}'s trainable parameters as the engine does`, () => {
      for (const { sets, params } of m.trainable_smollm2) {
        const cfg = configWith(m.id, sets);
        expect({ sets, params: trainableParams(cfg) }).toEqual({ sets, params });
      }
    });
  }

  it("has a catalog entry for every phrase key and setting the engine sends", () => {
    const keys = [
      ...FACTS.methods.flatMap((m) => Object.values(m.phrases).map((k) => `wizard.phrase.${k}`)),
      ...FACTS.keys.map((k) => `wizard.phrase.help.${k.key}`),
    ];
    expect(keys.filter((k) => !isMessageKey(k))).toEqual([]);
  });

  it("words each entry's English as the engine does, so the English window never goes stale", () => {
    const fields = ["changes_architecture", "inference_latency", "compute", "use_case", "difficulty"] as const;
    const column = { changes_architecture: 1, inference_latency: 2, compute: 3, use_case: 4, difficulty: 5 };
    const pairs: [string, string][] = [
      ...FACTS.methods.flatMap((m) => fields.map((f): [string, string] => [`wizard.phrase.${m.phrases[f]}`, m.columns[column[f]]])),
      ...FACTS.keys.map((k): [string, string] => [`wizard.phrase.help.${k.key}`, k.help]),
    ];
    const differ = pairs.filter(([key, english]) => isMessageKey(key) && translate("en", key) !== english);
    expect(differ).toEqual([]);
  });
});
