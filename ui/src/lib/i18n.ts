// Every user-facing string, in English and Simplified Chinese, from one catalog assembled
// from one file per area (lib/messages/*.ts). Method names stay English.
import * as core from "./messages/core";
import * as runs from "./messages/runs";
import * as serve from "./messages/serve";
import * as sweeps from "./messages/sweeps";
import * as tools from "./messages/tools";
import * as wizard from "./messages/wizard";

const en = { ...core.en, ...wizard.en, ...runs.en, ...tools.en, ...serve.en, ...sweeps.en };

export type MessageKey = keyof typeof en;

const zh: Record<MessageKey, string> = { ...core.zh, ...wizard.zh, ...runs.zh, ...tools.zh, ...serve.zh, ...sweeps.zh };

export type Locale = "en" | "zh";
const catalogs: Record<Locale, Record<MessageKey, string>> = { en, zh };

/** Whether `key` is in the catalog (keys built from what the backend sends). */
export function isMessageKey(key: string): key is MessageKey {
  return Object.hasOwn(en, key);
}

export function translate(locale: Locale, key: MessageKey): string {
  return catalogs[locale][key];
}

/** `translate` with `{name}` placeholders filled from `vars`. */
export function format(locale: Locale, key: MessageKey, vars: Record<string, string | number>): string {
  return translate(locale, key).replace(/\{(\w+)\}/g, (m, k: string) => (k in vars ? String(vars[k]) : m));
}
