// The method table's descriptive columns and the settings' help texts come from the backend
// in English with a stable key each (`MethodRow.phrases`, a setting's `key`); the window
// shows the catalog's `wizard.phrase.<key>` in the current language, and the English as it
// came when the catalog has no entry (a key newer than this window's catalog).
import { isMessageKey } from "./i18n";
import { t } from "./locale.svelte";

/** The catalog entry `key` in the current language, else `english`. */
export function phraseText(key: string, english: string): string {
  return isMessageKey(key) ? t(key) : english;
}
