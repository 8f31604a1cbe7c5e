// Number and time formatting for the run screens: units always shown, no false precision.
import { formatBytes } from "../../lib/format";

export const DASH = "—";

/** A loss to four decimals. */
export function formatLoss(v: number | null | undefined): string {
  return v == null || !Number.isFinite(v) ? DASH : v.toFixed(4);
}

/** Tokens per second with its unit. */
export function formatRate(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return DASH;
  return `${v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1)} tokens/s`;
}

/** Bytes in GiB/MiB (the shared formatter). */
export function formatMemory(v: number | null | undefined): string {
  return formatBytes(v ?? null);
}

/** 12.3M, 1.10B parameters. */
export function formatCount(n: number | null | undefined): string {
  if (n == null) return DASH;
  const units: [number, string][] = [
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "K"],
  ];
  for (const [scale, unit] of units) {
    if (n >= scale) {
      const v = n / scale;
      return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)}${unit}`;
    }
  }
  return String(n);
}

/** 42 s, 3 min 05 s, 2 h 07 min. */
export function formatDuration(s: number | null | undefined): string {
  if (s == null || !Number.isFinite(s) || s < 0) return DASH;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (h === 0) return `${m} min ${String(sec).padStart(2, "0")} s`;
  return `${h} h ${String(m).padStart(2, "0")} min`;
}

/** Short axis tick for seconds: 45s, 12m, 1.5h. */
export function formatSecondsTick(s: number): string {
  if (Math.abs(s) < 60) return `${Math.round(s)}s`;
  if (Math.abs(s) < 3600) return `${+(s / 60).toFixed(1)}m`;
  return `${+(s / 3600).toFixed(1)}h`;
}

/** Tick steps for an axis in seconds: whole seconds, minutes, hours. */
export const SECONDS_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

/** Short axis tick for token counts: 850, 12K, 3.4M. */
export function formatTokensTick(n: number): string {
  return n >= 1e3 ? formatCount(n).replace(/\.0+(?=[KMB])/, "") : String(Math.round(n));
}

/** A learning rate: 2.0e-4. */
export function formatLr(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return DASH;
  return v === 0 ? "0" : v.toExponential(1);
}

/** The database's timestamp as local `YYYY-MM-DD HH:MM` (the raw text when unparseable). */
export function formatDate(iso: string | null | undefined): string {
  if (!iso) return DASH;
  // SQLite writes "YYYY-MM-DD HH:MM:SS" in UTC; make it ISO so Date reads it as UTC.
  const norm = /^\d{4}-\d\d-\d\d \d\d:\d\d/.test(iso) && !/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? `${iso.replace(" ", "T")}Z` : iso;
  const d = new Date(norm);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** A timestamp as milliseconds, for sorting (0 when unparseable). */
export function dateMs(iso: string | null | undefined): number {
  if (!iso) return 0;
  const norm = /^\d{4}-\d\d-\d\d \d\d:\d\d/.test(iso) && !/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? `${iso.replace(" ", "T")}Z` : iso;
  const ms = new Date(norm).getTime();
  return Number.isNaN(ms) ? 0 : ms;
}

/** A rejected `api.*` call as text: the backend's message as-is. */
export function errorText(e: unknown): string {
  if (typeof e === "string") return e;
  if (e instanceof Error) return e.message;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}
