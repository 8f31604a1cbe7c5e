// Number and path formatting for the home, playground, export and settings screens.
import type { DeviceInfo } from "./ipc";

/** A loss with four significant figures, or "—". */
export function formatLoss(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return "—";
  return v.toPrecision(4);
}

/** Seconds as "850 ms", "4.2 s" or "3 min 05 s". */
export function formatSeconds(s: number | null | undefined): string {
  if (s == null || !Number.isFinite(s)) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s - m * 60);
  return `${m} min ${String(rest).padStart(2, "0")} s`;
}

/** Tokens per second with sensible precision. */
export function formatRate(tokens: number, seconds: number): string {
  if (!(seconds > 0)) return "—";
  const r = tokens / seconds;
  return r >= 100 ? r.toFixed(0) : r.toFixed(1);
}

/** A whole number with thousands separators: 134,515,008. */
export function formatCount(n: number | null | undefined): string {
  if (n == null) return "—";
  return Math.round(n).toLocaleString("en-US");
}

/** Parameters as "135M" / "1.7B". */
export function formatParams(n: number | null | undefined): string {
  if (n == null) return "—";
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return `${Math.round(n / 1e6)}M`;
  if (n >= 1e3) return `${Math.round(n / 1e3)}K`;
  return String(n);
}

/** A timestamp ("2025-06-01 12:34:56" or ISO) to minutes: "2025-06-01 12:34". */
export function formatWhen(ts: string | null | undefined): string {
  if (!ts) return "—";
  return ts.replace("T", " ").slice(0, 16);
}

/** The device string the backend takes (`cpu:0`, `cuda:1`, `metal:0`). */
export function deviceId(d: Pick<DeviceInfo, "kind" | "ordinal">): string {
  return `${d.kind}:${d.ordinal}`;
}

/** The best device to show as "main": the preferred one if available, else an available
 *  accelerator, else the first available device. */
export function mainDevice(devices: DeviceInfo[], preferred?: string): DeviceInfo | undefined {
  const avail = devices.filter((d) => d.available);
  return (
    (preferred ? avail.find((d) => deviceId(d) === preferred || d.kind === preferred) : undefined) ??
    avail.find((d) => d.kind !== "cpu") ??
    avail[0]
  );
}

/** `dir` joined with `parts`, using the separator `dir` already uses. */
export function joinPath(dir: string, ...parts: string[]): string {
  const sep = dir.includes("\\") && !dir.includes("/") ? "\\" : "/";
  return [dir.replace(/[\\/]+$/, ""), ...parts].join(sep);
}
