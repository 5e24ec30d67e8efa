// Times as people read them: "5 min ago" that ages in place (`<time data-ms>`
// elements that `refreshTimes` rewrites without rebuilding anything), and clock
// times such as "10:42". Pure formatting; no IPC.

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const dateFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const dateYearFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const clockFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });

function startOfDay(ms: number): number {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** "just now", "5 min ago", "3 h ago", "yesterday", "4 days ago", then a date. */
export function relativeTime(ms: number, now: number): string {
  const age = now - ms;
  if (age < 45_000) return "just now";
  if (age < HOUR) return `${Math.max(1, Math.round(age / MINUTE))} min ago`;
  const days = Math.round((startOfDay(now) - startOfDay(ms)) / DAY);
  if (days <= 0) return `${Math.floor(age / HOUR)} h ago`;
  if (days === 1) return "yesterday";
  if (days < 7) return `${days} days ago`;
  const sameYear = new Date(ms).getFullYear() === new Date(now).getFullYear();
  return (sameYear ? dateFmt : dateYearFmt).format(ms);
}

/** "10:42" today, "12 Mar, 10:42" on another day. */
export function clockTime(ms: number, now: number): string {
  const clock = clockFmt.format(ms);
  return startOfDay(ms) === startOfDay(now) ? clock : `${dateFmt.format(ms)}, ${clock}`;
}

/** Moves `el` to show `prefix` + the relative time of `ms` (exact time on hover). */
export function setTime(el: HTMLTimeElement, ms: number, now: number, prefix = ""): void {
  el.dateTime = new Date(ms).toISOString();
  el.title = fullFmt.format(ms);
  el.dataset.ms = String(ms);
  el.dataset.prefix = prefix;
  el.textContent = prefix + relativeTime(ms, now);
}

/** A `<time>` element showing a relative time that `refreshTimes` keeps current. */
export function timeElement(ms: number, now: number, className: string, prefix = ""): HTMLTimeElement {
  const el = document.createElement("time");
  el.className = className;
  setTime(el, ms, now, prefix);
  return el;
}

/** Brings every relative time under `root` up to `now`, touching nothing else. */
export function refreshTimes(root: ParentNode, now: number): void {
  for (const el of root.querySelectorAll<HTMLTimeElement>("time[data-ms]")) {
    const text = (el.dataset.prefix ?? "") + relativeTime(Number(el.dataset.ms), now);
    if (el.textContent !== text) el.textContent = text;
  }
}
