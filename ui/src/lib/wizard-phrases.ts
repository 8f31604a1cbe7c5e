// The method table's descriptive words come from the backend in English (docs/methods.md#comparison-table);
// where the English matches a catalog entry, show that entry in the current language.
import { en } from "./messages/wizard";
import type { MessageKey } from "./i18n";

const BY_TEXT = new Map<string, MessageKey>();
for (const [key, text] of Object.entries(en)) {
  if (key.startsWith("wizard.phrase.")) BY_TEXT.set(text.toLowerCase(), key as MessageKey);
}

/** The catalog key for a backend phrase (`none after merge`), if there is one. */
export function phraseKey(text: string): MessageKey | undefined {
  return BY_TEXT.get(text.trim().toLowerCase());
}
