// Every user-facing string, in English and Simplified Chinese. Method names stay English.
const en = {
  "app.title": "Whetstone",
  "nav.home": "Home",
  "theme.toggle": "Toggle light/dark theme",
  "lang.toggle": "中文",
  "doctor.title": "This machine",
  "doctor.loading": "Checking this machine…",
  "doctor.error": "Could not read the installation report",
  "doctor.version": "Version",
  "doctor.devices": "Devices",
  "doctor.available": "available",
  "doctor.unavailable": "unavailable",
  "doctor.threads": "threads",
  "doctor.dataDir": "Data directory",
  "doctor.database": "Database",
  "doctor.schema": "schema",
  "doctor.demoModel": "Demo model",
  "doctor.demoOk": "ready, hash verified",
  "doctor.demoMissing": "not downloaded yet: run ./dev setup",
  "doctor.demoDamaged": "damaged",
  "doctor.libraries": "Libraries",
  "status.device": "Device",
} as const;

export type MessageKey = keyof typeof en;

const zh: Record<MessageKey, string> = {
  "app.title": "Whetstone",
  "nav.home": "主页",
  "theme.toggle": "切换浅色/深色主题",
  "lang.toggle": "English",
  "doctor.title": "本机",
  "doctor.loading": "正在检查本机…",
  "doctor.error": "无法读取安装报告",
  "doctor.version": "版本",
  "doctor.devices": "设备",
  "doctor.available": "可用",
  "doctor.unavailable": "不可用",
  "doctor.threads": "线程",
  "doctor.dataDir": "数据目录",
  "doctor.database": "数据库",
  "doctor.schema": "结构版本",
  "doctor.demoModel": "演示模型",
  "doctor.demoOk": "就绪，哈希已校验",
  "doctor.demoMissing": "尚未下载：请运行 ./dev setup",
  "doctor.demoDamaged": "已损坏",
  "doctor.libraries": "依赖库",
  "status.device": "设备",
};

export type Locale = "en" | "zh";
const catalogs: Record<Locale, Record<MessageKey, string>> = { en, zh };

export function translate(locale: Locale, key: MessageKey): string {
  return catalogs[locale][key];
}
