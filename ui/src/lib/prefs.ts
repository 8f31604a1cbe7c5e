// Preferences kept in the window's localStorage: the training device and the theme.
// Plain functions (no runes) so any screen or module can use them.

export const DEVICE_KEY = "whetstone.device";
/** The resolved theme ("light" | "dark") App.svelte reads at start. */
export const THEME_KEY = "whetstone.theme";
/** What the person chose, including "system". */
export const THEME_CHOICE_KEY = "whetstone.themeChoice";

export type ThemeChoice = "light" | "dark" | "system";

function read(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function write(key: string, value: string | null): void {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // storage unavailable (private mode): the choice lasts for this session only
  }
}

/** The device the person picked in Settings (`cpu:0`, `cuda:1`, ...), or `undefined` for
 *  "let the backend choose the best one": pass it straight to `api.*(…, device?)`. */
export function preferredDevice(): string | undefined {
  return read(DEVICE_KEY) ?? undefined;
}

/** `null` goes back to automatic. */
export function setPreferredDevice(device: string | null): void {
  write(DEVICE_KEY, device);
}

/** The stored choice; when the shown theme was changed elsewhere since (the shell's
 *  toggle writes `whetstone.theme`), the shown one wins. */
export function themeChoice(): ThemeChoice {
  const c = read(THEME_CHOICE_KEY);
  const shown = read(THEME_KEY);
  const choice: ThemeChoice | null = c === "light" || c === "dark" || c === "system" ? c : null;
  if (shown !== "light" && shown !== "dark") return choice ?? "system";
  if (choice && resolveTheme(choice) === shown) return choice;
  return shown;
}

export function resolveTheme(choice: ThemeChoice): "light" | "dark" {
  if (choice !== "system") return choice;
  return typeof window !== "undefined" && window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/** Store the choice and show it now. */
export function applyTheme(choice: ThemeChoice): void {
  const resolved = resolveTheme(choice);
  document.documentElement.dataset.theme = resolved;
  write(THEME_KEY, resolved);
  write(THEME_CHOICE_KEY, choice);
}
