// The current locale as shared reactive state; `t` reads it so text updates on switch.
import { translate, type Locale, type MessageKey } from "./i18n";

export const locale = $state<{ current: Locale }>({
  current: navigator.language.startsWith("zh") ? "zh" : "en",
});

export function t(key: MessageKey): string {
  return translate(locale.current, key);
}
