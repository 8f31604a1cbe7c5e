// The current locale as shared reactive state; `t` reads it so text updates on switch.
import { format, translate, type Locale, type MessageKey } from "./i18n";

export const locale = $state<{ current: Locale }>({
  current: (localStorage.getItem("whetstone.locale") as Locale | null) ?? (navigator.language.startsWith("zh") ? "zh" : "en"),
});

/** The message for `key`; with `vars`, `{name}` placeholders are filled in. */
export function t(key: MessageKey, vars?: Record<string, string | number>): string {
  return vars ? format(locale.current, key, vars) : translate(locale.current, key);
}
