// The one typed bridge to the Rust side. Components call these functions, never `invoke`.
// Types come from ./bindings, generated from the Rust structs by ts-rs (`cargo test`).
import { invoke } from "@tauri-apps/api/core";
import type { DoctorReport } from "./bindings/DoctorReport";

export type { DoctorReport };
export type { DeviceInfo } from "./bindings/DeviceInfo";
export type { DemoModelStatus } from "./bindings/DemoModelStatus";

export const api = {
  /** Versions, devices, data directory, database and demo-model status. */
  doctor: (): Promise<DoctorReport> => invoke<DoctorReport>("doctor"),
};
