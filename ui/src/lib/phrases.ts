// Words the backend sends with a stable key each — the method table's descriptive columns
// (`MethodRow.phrases`), a setting's help (by its `key`), an objective's metric names — are
// shown as the catalog's entry for that key in the current language, and as the backend's
// English when the catalog has no entry (a key newer than this window's catalog).
import { isMessageKey } from "./i18n";
import { t } from "./locale.svelte";

/** The catalog entry `key` in the current language, else `english`. */
export function phraseText(key: string, english: string): string {
  return isMessageKey(key) ? t(key) : english;
}

/** An objective's metric title (`reward_accuracy`, ...) in the current language; its name as
 * it came when the catalog has none. */
export function metricTitle(name: string): string {
  return phraseText(`runs.metric.named.${name}`, name.replaceAll("_", " "));
}
